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
        The ranks of a distributed fit: the step runs eager on each rank's
        share of the subsamples (the recorded engine does not run
        distributed yet; asking for it warns).

    Returns
    -------
    EagerTrainer or RecordedTrainer
        Its ``engine`` and ``reason`` say what runs and why.
    """
    if group is not None:
        reason = group.describe()
        if engine not in ("auto", "eager"):
            warnings.warn(
                f"guide_core.fit runs eager: the {engine} engine does not run "
                "distributed yet",
                RuntimeWarning,
                stacklevel=3,
            )
            reason += f"; the {engine} engine does not run distributed yet"
        return DistributedTrainer(svi, args, kwargs, group, reason=reason)
    if engine == "eager":
        return EagerTrainer(svi, args, kwargs, reason="asked for")
    loss_fn, optimizer, why_not = plan(elbo, svi.optim)
    if why_not is not None:
        if engine != "auto":
            warnings.warn(
                f"guide_core.fit runs eager: {why_not}", RuntimeWarning, stacklevel=3
            )
        return EagerTrainer(svi, args, kwargs, reason=why_not)
    assert loss_fn is not None and optimizer is not None
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
