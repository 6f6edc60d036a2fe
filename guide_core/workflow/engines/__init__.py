"""How a step runs: the engines.

One :class:`~.trainer.Trainer` takes every step of :func:`guide_core.fit`
and :class:`guide_core.SVI`: gradients from a recorded program or from
Pyro's eager step (:mod:`.eager`), the peers' reduction (:mod:`.peers`; the
ranks of a distributed fit, :mod:`.ranks`, over the process group of
:mod:`.process_group`), the finite check, one optimizer's update
(:mod:`.optim`, its steps sized by :mod:`.scaled_steps`). A program
(:mod:`.program`) is the step captured from a loss written without value
reads (:mod:`.losses`), a repeated call computed once (:mod:`.repeats`);
:mod:`.recording` checks it against eager on the same draws and puts it
through inductor, ``torch.compile``'s back end (:mod:`.for_inductor`
prepares it), where that is faster. :mod:`.choose` picks the engine and
says why; :mod:`.costs` weighs when a recording or a compile pays off.
"""

from __future__ import annotations

from .choose import ENGINES, check_engine, make_trainer
from .costs import Costs
from .eager import BadStep
from .trainer import Parts, Settings, Trainer

__all__ = [
    "ENGINES",
    "BadStep",
    "Costs",
    "Parts",
    "Settings",
    "Trainer",
    "check_engine",
    "make_trainer",
]
