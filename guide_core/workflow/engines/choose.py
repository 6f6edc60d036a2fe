"""Which engine runs a fit, and why.

``"eager"`` is Pyro's gradient step. ``"recorded"`` and ``"compiled"`` need
an ELBO whose loss :mod:`.losses` can capture and an optimizer :mod:`.optim`
can map exactly; otherwise the steps run eager with the reason (and a
warning, since another engine was asked for). ``"auto"`` records when it can
and when the planned steps pay for it, and compiles when they pay for that
(:class:`~.costs.Costs`).
"""

from __future__ import annotations

import warnings
from typing import Any

import attrs
from pyro.infer.elbo import ELBO

from .losses import LossFn, NotRecordable, recordable_loss
from .optim import MappedOptimizer, NotMappable, map_optimizer
from .peers import ALONE
from .process_group import ProcessGroup
from .ranks import Ranks
from .trainer import Parts, Settings, Trainer

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
    svi: Any,
    elbo: Any,
    settings: Settings,
    *,
    group: ProcessGroup | None = None,
    warn: bool = True,
) -> Trainer:
    """The trainer that runs ``engine``'s steps (eager ones when it must).

    Parameters
    ----------
    engine : {"auto", "eager", "recorded", "compiled"}
    svi : pyro.infer.SVI
        The model, guide, optimizer and ELBO (or loss callable).
    elbo : pyro.infer.ELBO or callable
        The loss ``svi`` was built with.
    settings : Settings
        How the trainer runs (its ``mode`` is set from ``engine``).
    group : ProcessGroup or None
        The ranks of a distributed fit: each step runs on this rank's share
        of the subsamples, with one all-reduce of the gradients.
    warn : bool
        Warn when ``engine`` was asked for and the step must run eager.

    Returns
    -------
    Trainer
        Its ``engine`` and ``reason`` say what runs and why.
    """
    peers = ALONE if group is None else Ranks(group)
    parts = Parts.of(svi)
    if engine == "eager":
        return Trainer(parts, attrs.evolve(settings, mode="eager"), peers=peers)
    why_not = "the loss is not a pyro.infer ELBO"
    if isinstance(elbo, ELBO):
        loss_fn, optimizer, why_not = plan(elbo, svi.optim)
    if why_not is not None:
        if engine != "auto" and warn:
            warnings.warn(
                f"{settings.who} runs eager: {why_not}", RuntimeWarning, stacklevel=3
            )
        eager = attrs.evolve(settings, mode="eager")
        return Trainer(parts, eager, peers=peers, reason=why_not)
    return Trainer(
        parts,
        attrs.evolve(settings, mode=engine),
        loss_fn=loss_fn,
        optimizer=optimizer,
        peers=peers,
        reason="asked for" if engine != "auto" else "auto",
    )
