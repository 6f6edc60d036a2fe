"""What :func:`guide_core.fit` returns, and the error it raises on a NaN loss."""

from __future__ import annotations

from typing import Any

import attrs

from ..draws.diagnostics import KHat

__all__ = ["FitResult", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """The loss or a gradient became NaN or infinite during :func:`fit`.

    Attributes
    ----------
    step : int
        The step (counted from 1) whose loss was not finite; the parameters
        are as they were after the step before it.
    site : str or None
        A description of the site found with a non-finite value or density.
    """

    def __init__(self, message: str, step: int, site: str | None = None):
        super().__init__(message)
        self.step = step
        self.site = site


def _losses_repr(losses: tuple[float, ...]) -> str:
    last = f", last {losses[-1]:.6g}" if losses else ""
    return f"<{len(losses)} losses{last}>"


@attrs.frozen
class FitResult:
    """What :func:`fit` did.

    Attributes
    ----------
    guide : callable
        The fitted guide (its parameters are in Pyro's param store).
    losses : tuple of float
        The loss (negative ELBO estimate) of every step run.
    steps : int
        The number of steps run.
    converged : bool
        Whether the smoothed loss stopped changing before ``steps``.
    interrupted : bool
        Whether the fit was stopped with Ctrl-C (what was learned is kept).
    seconds : float
        Wall time of the steps (the k-hat not included).
    ms_per_step : float
        Milliseconds per step.
    khat : KHat or None
        The PSIS k-hat of the fitted guide, if it was computed.
    engine : str
        The engine that ran the last step: ``"eager"``, ``"recorded"`` or
        ``"compiled"``.
    engine_reason : str
        Why that engine (for ``"auto"``, the sums; for a fallback to eager,
        what could not be recorded or differed from eager).
    world_size : int
        The processes that fitted together (1 when not distributed).
    start : str
        How the guide started: from Pathfinder, or why not.
    gradient_evaluations : int
        Gradients of the log density computed, the warm start included.
    reduce_seconds : float
        The seconds this rank spent in the steps' all-reduces (waiting for
        the slowest rank included); 0 when not distributed.
    """

    guide: Any = attrs.field(repr=lambda g: type(g).__name__)
    losses: tuple[float, ...] = attrs.field(repr=_losses_repr)
    steps: int
    converged: bool
    interrupted: bool
    seconds: float
    ms_per_step: float
    khat: KHat | None = None
    engine: str = "eager"
    engine_reason: str = ""
    world_size: int = 1
    reduce_seconds: float = 0.0
    start: str = ""
    gradient_evaluations: int = 0
