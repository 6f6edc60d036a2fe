"""Process memory as the operating system sees it: resident set size (RSS).

A side's memory is measured in a fresh process (see :mod:`benchmarks.child`),
so nothing another side allocated is counted and every allocator is seen:
torch's CPU allocator, the buffers of a ``torch.compile``'d program (inductor
allocates outside the dispatcher, so a ``TorchDispatchMode`` would miss them),
JAX's, and Python's own objects.

On Linux the kernel keeps a peak RSS (``VmHWM`` in ``/proc/self/status``) that
can be reset to the current RSS by writing ``5`` to ``/proc/self/clear_refs``;
that lets a peak be taken over the timed steps alone, after the set-up and the
warm-up (record, compile) are done. Elsewhere the fallback is
``resource.getrusage(...).ru_maxrss``, the peak since the process started,
which includes the warm-up.

Resolution: pages (4 KiB), and the allocator's view, not the tensors': memory
that malloc keeps after a free still counts, and reused memory counts once.
"""

from __future__ import annotations

import gc
import resource
import sys
from pathlib import Path

__all__ = ["MIB", "PeakMeter", "current_rss", "peak_rss"]

MIB = 2**20
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        return None
    return None


def current_rss() -> int | None:
    """This process's resident set size now, in bytes (None where unknown)."""
    return _status_bytes("VmRSS")


def peak_rss() -> int:
    """This process's peak resident set size, in bytes (since start or reset)."""
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes


def reset_peak() -> bool:
    """Reset the kernel's peak RSS to the current RSS; False if not possible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class PeakMeter:
    """Peak RSS above a baseline, the peak taken over a chosen stretch.

    Call :meth:`baseline` once the shared set-up is done (imports, data), then
    :meth:`start` before the stretch to measure and :meth:`stop` after it.

    Attributes
    ----------
    base, before : int or None
        RSS at :meth:`baseline` and at :meth:`start`, in bytes.
    peak : int or None
        Peak RSS over the stretch (or since the process started, if the peak
        could not be reset: then ``reset`` is False).
    """

    def __init__(self) -> None:
        self.base: int | None = None
        self.before: int | None = None
        self.peak: int | None = None
        self.reset = False

    def baseline(self) -> None:
        """Record the RSS that every side of a comparison shares."""
        gc.collect()
        self.base = current_rss() or peak_rss()

    def start(self) -> None:
        """Begin the measured stretch: collect garbage and reset the peak."""
        gc.collect()
        self.before = current_rss()
        self.reset = reset_peak()

    def stop(self) -> None:
        """End the measured stretch."""
        self.peak = peak_rss()

    def as_dict(self) -> dict[str, float | bool | None]:
        """``peak_mib``: peak over the baseline; ``step_mib``: over the start."""

        def over(ref: int | None) -> float | None:
            if ref is None or self.peak is None:
                return None
            return max(0, self.peak - ref) / MIB

        return {
            "peak_mib": over(self.base),
            "step_mib": over(self.before),
            "base_mib": None if self.base is None else self.base / MIB,
            "reset": self.reset,
        }
