"""How :func:`guide_core.fit` runs a step: the engines.

``eager`` (:mod:`.eager`) is Pyro's ``SVI`` step. ``recorded``
(:mod:`.recorded`) captures the step as a tensor program (:mod:`.program`)
from a loss written without value reads (:mod:`.losses`), a repeated call
computed once (:mod:`.repeats`), checks it against
eager on the same draws, replays it and updates every param with one torch
optimizer (:mod:`.optim`); ``compiled`` puts that program through
inductor, ``torch.compile``'s back end (:mod:`.for_inductor` prepares it),
and keeps it where it is faster. :mod:`.choose` picks the engine and says why;
:mod:`.costs` decides when a compile pays off.
"""

from __future__ import annotations

from .choose import ENGINES, check_engine, make_trainer
from .eager import BadStep, EagerTrainer
from .recorded import RecordedTrainer

__all__ = [
    "ENGINES",
    "BadStep",
    "EagerTrainer",
    "RecordedTrainer",
    "check_engine",
    "make_trainer",
]
