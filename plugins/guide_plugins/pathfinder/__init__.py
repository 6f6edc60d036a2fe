"""The ``pathfinder`` family: Pathfinder variational inference, fitted by its
own procedure (L-BFGS, then the best Gaussian along the path), registered
exactly as a third party's plugin would be."""

from __future__ import annotations

from collections.abc import Callable

from guide_core import Capabilities, GuideSpec, InitStrategySpec, hookimpl

from .guide import AutoPathfinder, PathfinderRun
from .initialization import init_to_pathfinder
from .procedure import run_pathfinder

__all__ = ["AutoPathfinder", "PathfinderRun", "init_to_pathfinder", "run_pathfinder"]


@hookimpl
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register :class:`AutoPathfinder`, with its own fitting procedure."""
    register(
        GuideSpec(
            name="auto_pathfinder",
            factory=AutoPathfinder,
            family="pathfinder",
            summary="Pathfinder: the best Gaussian along L-BFGS paths, combined "
            "by Pareto-smoothed importance resampling.",
            capabilities=Capabilities(),
            procedure=run_pathfinder,
        )
    )


@hookimpl
def register_init_strategies(register: Callable[[InitStrategySpec], None]) -> None:
    """Register ``init_loc_fn="pathfinder"``."""
    register(
        InitStrategySpec(
            name="pathfinder",
            strategy=init_to_pathfinder,
            summary="Start at the mean Pathfinder finds (mode and curvature).",
        )
    )
