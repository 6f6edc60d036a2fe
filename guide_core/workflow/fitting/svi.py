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

from ..engines import BadStep, Settings, Trainer, check_engine, make_trainer
from ..engines.process_group import ProcessGroup
from ..engines.trainer import RECORD_AFTER

__all__ = ["CHECKS", "RECORD_AFTER", "SVI", "open_loop"]

#: When a replayed step is checked against Pyro's eager step on the same
#: draws: the first ``early`` replays of each program, then every ``every``
#: steps (a model that reads Python state outside its arguments, such as a
#: global annealing factor, is caught there and runs eager from then on).
CHECKS = {"early": 2, "every": 200}


def open_loop(mode: str, check_every: int | None, who: str) -> Settings:
    """The settings of a loop whose steps are not planned (``SVI``,
    ``ELBOModule``): numbers are inputs, new shapes evict old programs, and
    each program's first replays are checked."""
    return Settings(
        mode=mode,
        check_every=check_every,
        check_first=CHECKS["early"],
        lift_numbers=True,
        evict=True,
        who=who,
    )


class SVI(PyroSVI):
    """Stochastic variational inference, as ``pyro.infer.SVI``, on the
    recorded engine.

    Parameters
    ----------
    model, guide, optim, loss, loss_and_grads, num_samples, num_steps :
        As for ``pyro.infer.SVI``.
    engine : {"auto", "recorded", "eager"}
        ``"recorded"`` replays a recorded step from the second step where it
        can, and runs Pyro's step (with a warning) where it cannot (a guide
        without parameters has nothing to record: Pyro's step, no warning,
        and :attr:`reason` says so); ``"auto"`` (the default) does the same
        after :data:`RECORD_AFTER` steps of Pyro's, silently; ``"eager"`` is
        Pyro's step, always.
    check_every : int or None
        Check a replayed step against Pyro's every this many steps (besides
        the first replays of each program); None: only the first replays.
    settings : guide_core.workflow.engines.Settings, optional
        Everything about how the steps run, as one record, for a caller that
        plans its steps (:func:`guide_core.fit` does: with ``steps`` planned,
        ``"auto"`` records only when they pay for it, and ``"compiled"`` is
        allowed); its ``mode`` is ``engine``. Default: the above.
    group : guide_core.workflow.engines.process_group.ProcessGroup, optional
        Run data-parallel over these ranks: each step on this rank's share
        of the subsampled plates, the gradients averaged over the ranks.

    A step whose loss or a gradient is not finite is not applied (Pyro's
    would write NaN into the parameters): it warns once and returns NaN.

    Attributes
    ----------
    engine : str
        What ran the last step: ``"recorded"``, ``"compiled"`` or ``"eager"``.
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
        settings: Settings | None = None,
        group: ProcessGroup | None = None,
        **kwargs: Any,
    ):
        super().__init__(
            model, guide, optim, loss, loss_and_grads, num_samples, num_steps, **kwargs
        )
        engine = check_engine(engine)
        if settings is None:
            settings = open_loop(engine, check_every, "guide_core.SVI")
        if engine == "compiled" and settings.steps is None:
            raise ValueError(
                "'engine': 'compiled' is for guide_core.fit, which knows how many "
                "steps will pay for compiling; SVI takes 'auto', 'recorded' or "
                "'eager'"
            )
        self._trainer: Trainer = make_trainer(engine, self, loss, settings, group=group)
        self._steps = 0
        self._warned: set[str] = set()

    @property
    def engine(self) -> str:
        """What ran the last step: ``"eager"``, ``"recorded"`` or ``"compiled"``."""
        return self._trainer.engine

    @property
    def reason(self) -> str:
        """Why that engine."""
        return self._trainer.reason

    def step(self, *args: Any, **kwargs: Any) -> float:
        """Take one gradient step; return the loss (as ``pyro.infer.SVI``)."""
        try:
            return self.checked_step(*args, **kwargs)
        except BadStep as exc:
            self._trainer.zero_grads()
            self._say(
                "a step whose loss or a gradient is not finite was not applied",
                f"the first was step {exc.step} ({exc.what}); the parameters keep "
                "their last finite values",
            )
            return math.nan

    def checked_step(self, *args: Any, **kwargs: Any) -> float:
        """Take one gradient step; return the loss, or raise where a step
        cannot be taken.

        Raises
        ------
        BadStep
            When the loss or a gradient is not finite (nothing is updated;
            the gradients are left for the caller to inspect or drop with
            :meth:`zero_grads`).
        """
        self._steps += 1
        return self._trainer.step(self._steps, args, kwargs)

    def zero_grads(self) -> None:
        """Drop the gradients of every param (after a failed step)."""
        self._trainer.zero_grads()

    def _say(self, what: str, then: str = "") -> None:
        """Warn once per reason."""
        if what in self._warned:
            return
        self._warned.add(what)
        message = f"guide_core.SVI: {what}" + (f"; {then}" if then else "")
        warnings.warn(message, RuntimeWarning, stacklevel=3)
