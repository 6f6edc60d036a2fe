"""``guide_core.SVI``: ``pyro.infer.SVI`` whose step replays a recorded program.

A Pyro program calls ``svi.step(batch)`` in a loop of its own: mini-batches
from a ``DataLoader``, a KL weight that changes every step, Lightning. This
class is ``pyro.infer.SVI`` (a subclass, with its constructor, ``step``,
``evaluate_loss`` and attributes) whose ``step`` runs the recorded engine of
:mod:`guide_core.workflow.engines`: the step is captured once per signature
of its inputs (shapes, dtypes and devices of the tensor arguments; Python
floats are inputs too, so a weight that changes every step replays the same
program), checked against Pyro's own step on the same draws, and replayed.
The parameters stay in Pyro's param store under Pyro's names, and the update
runs on the state of the user's ``optim`` (``get_state``, ``set_state``,
``save`` and ``load`` give and take it). What cannot be recorded runs Pyro's
own step, with the reason said once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pyro
from pyro.infer import SVI as PyroSVI
from pyro.infer.elbo import ELBO

from .engines import BadStep
from .engines.choose import check_engine, plan
from .engines.recorded import RecordedTrainer

__all__ = ["CHECKS", "RECORD_AFTER", "SVI"]

#: When a replayed step is checked against Pyro's eager step on the same
#: draws: the first ``early`` replays of each program, then every ``every``
#: steps (a model that reads Python state outside its arguments, such as a
#: global annealing factor, is caught there and runs eager from then on).
CHECKS = {"early": 2, "every": 200}
#: ``engine="auto"`` runs Pyro's step this many times before it records: a
#: recording costs about 50-100 eager steps (measured: 0.5 s against 6 ms
#: steps on a 1,000-row regression), so a short loop is never slower than
#: Pyro's and a long one pays it back.
RECORD_AFTER = 50


class SVI(PyroSVI):
    """Stochastic variational inference, as ``pyro.infer.SVI``, on the
    recorded engine.

    Parameters
    ----------
    model, guide, optim, loss, loss_and_grads, num_samples, num_steps :
        As for ``pyro.infer.SVI``.
    engine : {"auto", "recorded", "eager"}
        ``"recorded"`` replays a recorded step from the second step where it
        can, and runs Pyro's step (with a warning) where it cannot;
        ``"auto"`` (the default) does the same after :data:`RECORD_AFTER`
        steps of Pyro's, silently; ``"eager"`` is Pyro's step, always.
    check_every : int or None
        Check a replayed step against Pyro's every this many steps (besides
        the first replays of each program); None: only the first replays.

    A step whose loss or a gradient is not finite is not applied (Pyro's
    would write NaN into the parameters): it warns once and returns NaN.

    Attributes
    ----------
    engine : str
        What runs now: ``"recorded"`` or ``"eager"``.
    reason : str
        Why (said once, as a warning, when a recorded engine falls back).
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        optim: pyro.optim.PyroOptim,
        loss: ELBO | Callable,
        loss_and_grads: Callable | None = None,
        num_samples: int = 0,
        num_steps: int = 0,
        *,
        engine: str = "auto",
        check_every: int | None = CHECKS["every"],
        **kwargs: Any,
    ):
        super().__init__(
            model, guide, optim, loss, loss_and_grads, num_samples, num_steps, **kwargs
        )
        if check_engine(engine) == "compiled":
            raise ValueError(
                "'engine': 'compiled' is for guide_core.fit, which knows how many "
                "steps will pay for compiling; SVI takes 'auto', 'recorded' or "
                "'eager'"
            )
        self._check_every = check_every
        self._trainer: RecordedTrainer | None = None
        self._steps = 0
        self._warned: set[str] = set()
        self._plan: tuple | None = None
        self.engine, self.reason = "eager", "asked for"
        if engine != "eager":
            why_not = "the loss is not a pyro.infer ELBO"
            if isinstance(loss, ELBO):
                loss_fn, optimizer, why_not = plan(loss, optim)
            if why_not is None:
                self._plan = (loss_fn, optimizer)
                self.engine, self.reason = "recorded", engine
            else:
                self.reason = why_not
        self._asked = engine if self._plan is not None else "eager"
        if engine == "recorded" and self._plan is None:
            self._say(f"runs Pyro's step: {self.reason}")

    def step(self, *args: Any, **kwargs: Any) -> float:
        """Take one gradient step; return the loss (as ``pyro.infer.SVI``)."""
        self._steps += 1
        if self._asked == "eager":
            return super().step(*args, **kwargs)
        if self._asked == "auto" and self._steps <= RECORD_AFTER:
            self.engine = "eager"
            self.reason = f"auto: Pyro's step for the first {RECORD_AFTER} steps"
            return super().step(*args, **kwargs)
        trainer = self._trainer_for(args, kwargs)
        trainer.set_inputs(args, kwargs)
        try:
            loss = trainer.step(self._steps)
        except BadStep as exc:
            trainer.zero_grads()
            self._say(
                "a step whose loss or a gradient is not finite was not applied",
                f"the first was step {exc.step} ({exc.what}); the parameters keep "
                "their last finite values",
            )
            return math.nan
        finally:
            self.engine, self.reason = trainer.engine, trainer.reason
            if self._asked == "auto" and not trainer.eager:
                self.reason = f"auto: recorded after {RECORD_AFTER} steps of Pyro's"
        return loss

    def _trainer_for(self, args: tuple, kwargs: dict) -> RecordedTrainer:
        if self._trainer is None:
            assert self._plan is not None
            loss_fn, optimizer = self._plan
            self._trainer = RecordedTrainer(
                self,
                args,
                kwargs,
                loss_fn=loss_fn,
                optimizer=optimizer,
                mode="recorded",
                steps=0,
                check_every=self._check_every,
                check_first=CHECKS["early"],
                lift_numbers=True,
                evict=True,
                who="guide_core.SVI",
            )
        return self._trainer

    def _say(self, what: str, then: str = "") -> None:
        """Warn once per reason."""
        if what in self._warned:
            return
        self._warned.add(what)
        message = f"guide_core.SVI: {what}" + (f"; {then}" if then else "")
        warnings.warn(message, RuntimeWarning, stacklevel=3)
