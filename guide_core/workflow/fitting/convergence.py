"""Stan's ADVI convergence rule, as :func:`guide_core.fit` applies it.

Every ``window`` steps the relative change of the mean loss over the last
window against the one before is recorded; the fit has converged when the
mean or the median of the recent changes is below ``tol``. The rule lives
here once: ``fit`` stops by it, and :func:`convergence_step` replays it on
a finished run's losses (the benchmark's time to convergence).
"""

from __future__ import annotations

import math
import statistics

__all__ = ["convergence_step"]


def _relative_change(losses: list[float], window: int) -> float:
    """Relative change of the mean loss over the last window vs the one before."""
    current = math.fsum(losses[-window:]) / window
    previous = math.fsum(losses[-2 * window : -window]) / window
    scale = max(abs(current), abs(previous))
    return abs(current - previous) / scale if scale > 0 else 0.0


def _converged(
    losses: list[float], changes: list[float], tol: float, window: int, buffer: int
) -> bool:
    """Stan's rule after the latest step of ``losses``; appends to ``changes``.

    Every ``window`` steps (from ``2 * window`` on) the relative change of the
    window means is recorded; converged when the mean or the median of the
    last ``buffer`` changes (at least two) is below ``tol``.
    """
    number = len(losses)
    if number % window or number < 2 * window:
        return False
    changes.append(_relative_change(losses, window))
    recent = changes[-buffer:]
    return (
        len(recent) >= 2
        and min(statistics.fmean(recent), statistics.median(recent)) < tol
    )


def _buffer_size(steps: int, window: int) -> int:
    return max(2, steps // (10 * window))


def convergence_step(
    losses: list[float] | tuple[float, ...],
    tol: float = 1e-4,
    window: int = 50,
    steps: int | None = None,
) -> int | None:
    """The step at which :func:`fit` would have stopped as converged, or None.

    Replays :func:`fit`'s convergence rule (Stan's ADVI rule) on a finished
    sequence of losses, e.g. one run with ``tol=None`` for all its steps.

    Parameters
    ----------
    losses : sequence of float
        The loss of every step, from the first.
    tol, window : float, int
        As in :func:`fit`.
    steps : int, optional
        The ``steps`` the fit was planned with (sets how many recent changes
        are pooled); default ``len(losses)``.

    Returns
    -------
    int or None
        The 1-based step, or None if the rule never fired.
    """
    buffer = _buffer_size(len(losses) if steps is None else steps, window)
    seen: list[float] = []
    changes: list[float] = []
    for number, value in enumerate(losses, start=1):
        seen.append(value)
        if _converged(seen, changes, tol, window, buffer):
            return number
    return None
