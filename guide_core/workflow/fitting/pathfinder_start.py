"""Warm starts from Pathfinder: a Gaussian guide starts at the posterior.

:func:`pathfinder_start` runs the ``auto_pathfinder`` guide (the pathfinder
plugin, found through the registry like any other) on the model and hands
the Gaussian it found, the mean and covariance of its importance-resampled
draws, to the guide's :meth:`~guide_core.AutoGuide.warm_start`. Where that
cannot be done (the plugin is missing, a discrete or subsampled site, a guide
without Gaussian parameters) it says why, and the fit starts as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import torch

from ...core.composite import AutoGuideList
from ...core.draws import default_model
from ...core.gaussian_start import GaussianStart
from ...core.guide import AutoGuide
from ...registry import default_registry

__all__ = ["StartOutcome", "pathfinder_start", "warm_startable"]

#: Paths of the Pathfinder run behind a warm start.
START_PATHS = 4
#: L-BFGS iterations per path: Newton's method finishes the way to the mode
#: where the dimension allows (Pathfinder's own default is 1,000).
START_ITERS = 250


@attrs.frozen
class StartOutcome:
    """What a warm start did.

    Attributes
    ----------
    scales : dict or None
        Param-store name to natural step, or None when there was no start.
    reason : str
        What started the guide, or why Pathfinder did not.
    gradient_evaluations : int
        Gradients Pathfinder computed.
    seconds : float
        Its wall time.
    """

    scales: dict[str, torch.Tensor] | None
    reason: str
    gradient_evaluations: int = 0
    seconds: float = 0.0


def warm_startable(guide: Any) -> bool:
    """Whether ``guide`` (or every part of a guide list) has a Gaussian to set."""
    if isinstance(guide, AutoGuideList):
        return len(guide) > 0 and all(warm_startable(part) for part in guide)
    return isinstance(guide, AutoGuide) and (
        type(guide)._warm_start is not AutoGuide._warm_start
    )


def _start_of(pathfinder: Any, args: tuple, kwargs: dict) -> tuple:
    """The Gaussian start and how it was found: Pathfinder's, or the Laplace
    approximation at the mode Newton's method reaches from it, whichever has
    the better ELBO (a plugin without ``best_gaussian`` gives its moments)."""
    slices = {s.name: (s.start, s.stop, s.shape) for s in pathfinder._layout}
    if hasattr(pathfinder, "best_gaussian"):
        best = pathfinder.best_gaussian(*args, **kwargs)
        loc, cov, source = best.loc, best.covariance, best.source
        extra = best.gradient_evaluations
    else:
        (loc, cov), source, extra = pathfinder.moments(), "Pathfinder", 0
    transforms = {s.name: s.site.require_transform() for s in pathfinder._layout}
    start = GaussianStart(slices, loc.detach(), cov.detach(), transforms)
    return start, source, extra


def pathfinder_start(
    model: Callable | None, guide: Any, args: tuple, kwargs: dict
) -> StartOutcome:
    """Run Pathfinder on the model; warm-start ``guide`` from its Gaussian."""
    if isinstance(guide, AutoGuideList) and len(guide) == 0:
        try:  # a list that picks its parts per site (``auto``) makes them now
            guide._ensure_setup(*args, **kwargs)
        except Exception:  # noqa: BLE001 - the fit's first step reports it
            pass
    if not warm_startable(guide):
        return StartOutcome(
            None, f"no warm start: {type(guide).__name__} has no Gaussian to set"
        )
    registry = default_registry()
    if "auto_pathfinder" not in registry.names():
        return StartOutcome(None, "no warm start: the pathfinder plugin is not loaded")
    model = default_model(guide) if model is None else model
    began = time.perf_counter()
    try:
        pathfinder = registry.make(
            "auto_pathfinder", model, num_paths=START_PATHS, max_iters=START_ITERS
        )
        run = pathfinder.run(*args, **kwargs)
        start, source, newton = _start_of(pathfinder, args, kwargs)
        parts = list(guide) if isinstance(guide, AutoGuideList) else [guide]
        scales: dict[str, torch.Tensor] = {}
        for part in parts:
            scales.update(part.warm_start(start, *args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - a failed start never fails the fit
        exc_name = type(exc).__name__
        return StartOutcome(
            None,
            f"no warm start: Pathfinder could not run on this model ({exc_name}: "
            f"{exc})",
            seconds=time.perf_counter() - began,
        )
    return StartOutcome(
        scales,
        f"warm start from Pathfinder ({START_PATHS} paths, Pareto k "
        f"{run.pareto_k:.2f}): {source}; steps in posterior sds",
        run.gradient_evaluations + newton,
        time.perf_counter() - began,
    )
