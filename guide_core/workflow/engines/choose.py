"""Which engine runs a fit, and why.

``"eager"`` is Pyro's ``SVI`` loop, unchanged. ``"recorded"`` and
``"compiled"`` need an ELBO whose loss :mod:`.losses` can capture and an
optimizer :mod:`.optim` can map exactly; otherwise the fit runs eager with
the reason (and a warning, since another engine was asked for). ``"auto"``
records when it can and compiles when :func:`~.costs.compile_pays_off`.
"""

from __future__ import annotations

import warnings
from typing import Any

from pyro.infer import SVI

from ..distributed import ProcessGroup
from .distributed import DistributedTrainer
from .distributed_recorded import DistributedRecordedTrainer
from .eager import EagerTrainer
from .losses import LossFn, NotRecordable, recordable_loss
from .optim import MappedOptimizer, NotMappable, map_optimizer
from .recorded import RecordedTrainer

__all__ = ["ENGINES", "check_engine", "make_trainer", "plan"]

ENGINES = ("auto", "eager", "recorded", "compiled")


def check_engine(engine: Any) -> str:
    """Return ``engine`` if it is one of :data:`ENGINES`, else raise ValueError."""
    if engine not in ENGINES:
        raise ValueError(
            f"'engine' must be one of {', '.join(map(repr, ENGINES))}: {engine!r}"
        )
    return engine


def plan(
    elbo: Any, optim: Any
) -> tuple[LossFn | None, MappedOptimizer | None, str | None]:
    """The recordable loss and the mapped optimizer, or why there are none.

    Returns
    -------
    tuple
        ``(loss_fn, optimizer, None)``, or ``(None, None, reason)`` when the
        step must run eager.
    """
    try:
        loss_fn = recordable_loss(elbo)
        optimizer = map_optimizer(optim)
    except (NotRecordable, NotMappable) as exc:
        return None, None, str(exc)
    return loss_fn, optimizer, None


def make_trainer(
    engine: str,
    svi: SVI,
    elbo: Any,
    args: tuple,
    kwargs: dict,
    *,
    steps: int,
    check_every: int | None = None,
    group: ProcessGroup | None = None,
) -> EagerTrainer | RecordedTrainer:
    """The trainer that runs ``engine``'s steps (an eager one when it must).

    Parameters
    ----------
    engine : {"auto", "eager", "recorded", "compiled"}
    svi : pyro.infer.SVI
        The model, guide, optimizer and ELBO.
    elbo : pyro.infer.ELBO
        The ELBO ``svi`` was built with.
    args, kwargs :
        The model's arguments.
    steps : int
        The planned steps.
    check_every : int or None
        Check the recorded step against eager every this many steps too.
    group : ProcessGroup or None
        The ranks of a distributed fit: each engine runs on each rank's share
        of the subsamples, with one all-reduce of the gradients per step
        (``"auto"`` records but does not compile on its own then).

    Returns
    -------
    EagerTrainer or RecordedTrainer
        Its ``engine`` and ``reason`` say what runs and why.
    """
    if engine == "eager":
        return _eager(svi, args, kwargs, "asked for", group)
    loss_fn, optimizer, why_not = plan(elbo, svi.optim)
    if why_not is not None:
        if engine != "auto":
            warnings.warn(
                f"guide_core.fit runs eager: {why_not}", RuntimeWarning, stacklevel=3
            )
        return _eager(svi, args, kwargs, why_not, group)
    assert loss_fn is not None and optimizer is not None
    if group is not None:
        return DistributedRecordedTrainer(
            svi,
            args,
            kwargs,
            group,
            loss_fn=loss_fn,
            optimizer=optimizer,
            mode=engine,
            steps=steps,
            check_every=check_every,
        )
    return RecordedTrainer(
        svi,
        args,
        kwargs,
        loss_fn=loss_fn,
        optimizer=optimizer,
        mode=engine,
        steps=steps,
        check_every=check_every,
    )


def _eager(
    svi: SVI, args: tuple, kwargs: dict, reason: str, group: ProcessGroup | None
) -> EagerTrainer:
    if group is not None:
        return DistributedTrainer(svi, args, kwargs, group, reason=reason)
    return EagerTrainer(svi, args, kwargs, reason=reason)
