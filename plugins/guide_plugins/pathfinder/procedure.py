"""The procedure ``guide_core.fit`` runs for an :class:`AutoPathfinder`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from guide_core.plugin import ProcedureOutcome

__all__ = ["run_pathfinder"]


def run_pathfinder(
    model: Callable,
    guide: Any,
    args: tuple,
    kwargs: dict,
    *,
    progress: bool = False,
) -> ProcedureOutcome:
    """Run Pathfinder for ``guide`` (an ``AutoPathfinder``) on ``model``'s data.

    ``model`` must be the one the guide was built for. The losses are the
    negative ELBO estimates of the Gaussians the paths kept.
    """
    run = guide.run(*args, **kwargs)
    losses = tuple(-e if math.isfinite(e) else math.inf for e in run.elbos)
    paths = len(run.elbos)
    note = (
        f"pathfinder: {paths} path{'s' if paths > 1 else ''}, "
        f"{sum(run.iterations)} L-BFGS iterations, "
        f"{run.gradient_evaluations} gradients, Pareto k {run.pareto_k:.2f}"
    )
    return ProcedureOutcome(
        losses=losses,
        steps=sum(run.iterations),
        converged=not any("max_iters" in n for n in run.notes),
        gradient_evaluations=run.gradient_evaluations,
        note=note,
    )
