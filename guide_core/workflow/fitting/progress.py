"""The progress display of :func:`~guide_core.fit`: a bar or plain lines.

On a terminal the bar is tqdm's, redrawn in place. When standard error is not a
terminal (a log file, a CI job, a notebook's captured output), redraws would each
become a line, so a plain line is written instead every 10% of the steps or every
``interval`` seconds, whichever comes first.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

from tqdm import tqdm

__all__ = ["LineProgress", "Progress", "progress_bar"]


class Progress(Protocol):
    """What :func:`~guide_core.fit` calls on its progress display."""

    def update(self, n: int = 1) -> Any:
        """Count ``n`` more steps done."""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> Any:
        """Show ``s`` (e.g. the smoothed loss) after the count."""

    def set_description_str(self, s: str = "", refresh: bool = True) -> Any:
        """Change the label (e.g. when the engine changes)."""

    def close(self) -> Any:
        """Finish the display."""


class LineProgress:
    """Progress as whole lines, for output that is not a terminal.

    Parameters
    ----------
    total : int
        The number of steps expected.
    desc : str
        The label at the start of each line.
    stream : file-like
        Where the lines go.
    fraction : float
        Write a line each time this fraction of ``total`` more is done.
    interval : float
        Also write a line when this many seconds passed since the last one.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        stream: TextIO,
        fraction: float = 0.1,
        interval: float = 10.0,
    ):
        self.total, self.desc, self.stream = total, desc, stream
        self.every = max(1, int(total * fraction))
        self.interval = interval
        self.count = 0
        self.postfix = ""
        self.start = self.last_time = time.perf_counter()
        self.last_count = 0
        self.closed = False

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps; write a line if it is time for one."""
        self.count += n
        now = time.perf_counter()
        if (
            self.count - self.last_count >= self.every
            or now - self.last_time >= self.interval
        ):
            self._write(now)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Keep ``s`` for the next line."""
        self.postfix = s

    def set_description_str(self, s: str = "", refresh: bool = True) -> None:
        """Use ``s`` as the label from the next line on."""
        self.desc = s

    def close(self) -> None:
        """Write the last line, unless the last one already said it all."""
        if self.closed:
            return
        self.closed = True
        if self.count != self.last_count or self.count == 0:
            self._write(time.perf_counter())

    def _write(self, now: float) -> None:
        elapsed = now - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        percent = 100.0 * self.count / self.total if self.total else 100.0
        tail = f", {self.postfix}" if self.postfix else ""
        self.stream.write(
            f"{self.desc}: {self.count}/{self.total} steps ({percent:.0f}%) "
            f"{elapsed:.1f} s, {rate:.1f} steps/s{tail}\n"
        )
        self.stream.flush()
        self.last_time, self.last_count = now, self.count


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(
    total: int, enabled: bool = True, desc: str = "fit", stream: TextIO | None = None
) -> Progress:
    """Return the progress display for a loop of ``total`` steps.

    Parameters
    ----------
    total : int
        The number of steps expected.
    enabled : bool
        ``False`` shows nothing.
    desc : str
        The label.
    stream : file-like, optional
        Default ``sys.stderr`` (looked up now, so captured output is honoured).

    Returns
    -------
    Progress
        A tqdm bar on a terminal, else a :class:`LineProgress`.
    """
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return tqdm(total=total, disable=True)
    if _is_terminal(stream):
        return tqdm(total=total, desc=desc, unit="step", file=stream, leave=True)
    return LineProgress(total, desc, stream)
