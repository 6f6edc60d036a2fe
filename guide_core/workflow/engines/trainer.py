"""One trainer for every engine: gradients, reduce, finite check, update.

Every step of :func:`guide_core.fit`, :class:`guide_core.SVI` and (for its
gradients) :class:`guide_core.ElBOModule` is the same four moves:

1. the gradients, from the program recorded for the signature of the
   step's inputs (:mod:`.recording`), or from Pyro's eager step where there
   is none (step 1 creates the params; what cannot be recorded; what
   ``"auto"`` finds not worth recording);
2. the peers' reduction (:mod:`.peers`: nothing in one process, the ranks'
   all-reduce in a distributed fit);
3. the check that the loss and every gradient are finite (:class:`BadStep`
   if not: the step is not applied);
4. the optimizer's update: one :class:`~.optim.MappedOptimizer` on the
   state of the user's ``pyro.optim`` optimizer, eager step or not, so the
   state carries over; Pyro's own optimizer where no mapping exists.

What the caller decides is a :class:`Settings` record, fixed for the run;
what the trainer learns (its params, programs, which engine runs and why) is
its :class:`State` record.
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import pyro
import torch

from .costs import Costs
from .eager import BadStep, check_finite, eager_loss_and_grads, zero_all_grads
from .losses import LossFn
from .optim import MappedOptimizer
from .peers import ALONE, Peers
from .program import StepProgram, signature, split_args
from .recording import record_checked, replay_differs

__all__ = [
    "MAX_PROGRAMS",
    "RECORD_AFTER",
    "BadStep",
    "Parts",
    "Settings",
    "State",
    "Trainer",
]

MAX_PROGRAMS = 8  # signatures kept at once
#: In an open loop (steps not planned), ``"auto"`` runs Pyro's step this many
#: times before it records: a recording costs about 50-100 eager steps
#: (measured: 0.5 s against 6 ms steps on a 1,000-row regression), so a short
#: loop is never slower than Pyro's and a long one pays it back.
RECORD_AFTER = 50


@attrs.frozen
class Parts:
    """What a step runs: the model, guide, Pyro's gradient step and optimizer.

    ``optim`` updates only where no :class:`~.optim.MappedOptimizer` is
    given; None where the caller updates (``ELBOModule``).
    """

    model: Callable
    guide: Callable
    loss_and_grads: Callable
    optim: Any = None

    @classmethod
    def of(cls, svi: Any) -> Parts:
        """The parts of a ``pyro.infer.SVI``."""
        return cls(svi.model, svi.guide, svi.loss_and_grads, svi.optim)


@attrs.frozen
class Settings:
    """How a trainer runs: decided by its caller, fixed for the run.

    Parameters
    ----------
    mode : {"eager", "recorded", "compiled", "auto"}
        ``"auto"`` records when the planned ``steps`` pay for it (after
        :data:`RECORD_AFTER` steps when there is no plan) and compiles when
        they pay for that too.
    steps : int or None
        The planned steps; None in an open loop (``SVI``, ``ELBOModule``).
    check_every : int or None
        Also check a replay against eager every this many steps.
    check_first : int
        Also check each program's first this many replays.
    lift_numbers : bool
        Top-level Python float arguments are inputs of the program (one
        program for any value), unless a capture with them fails.
    max_programs : int
        Programs kept, one per signature of the inputs.
    evict : bool
        When ``max_programs`` are kept, a new signature drops the least
        recently used program (else the trainer runs eager from then on).
    who : str
        Who runs the steps, for warnings.
    costs : Costs
        The recording and compile times ``"auto"`` weighs.
    """

    mode: str = "recorded"
    steps: int | None = None
    check_every: int | None = None
    check_first: int = 0
    lift_numbers: bool = False
    max_programs: int = MAX_PROGRAMS
    evict: bool = False
    who: str = "guide_core.fit"
    costs: Costs = attrs.field(factory=Costs)


@attrs.define
class State:
    """What a trainer has learned: its params, programs, and what runs why."""

    engine: str
    reason: str
    eager: bool  # for good: nothing is recorded from then on
    lift: bool
    decided: bool = False  # "auto" has weighed recording
    params: dict[str, torch.Tensor] = attrs.field(factory=dict)
    programs: OrderedDict[tuple, StepProgram] = attrs.field(factory=OrderedDict)
    inputs: tuple[tuple, dict] = ((), {})
    eager_ms: float = float("inf")  # the last eager step
    record_seconds: list[float] = attrs.field(factory=list)
    compile_seconds: list[float] = attrs.field(factory=list)


def _store_params() -> Iterable[torch.Tensor]:
    return (p for _, p in pyro.get_param_store().named_parameters())


class Trainer:
    """Runs steps on the engine its settings ask for, eager where it must.

    Parameters
    ----------
    parts : Parts
        The model, guide, Pyro's gradient step and optimizer.
    settings : Settings
    loss_fn : callable or None
        The ELBO's loss without value reads (:mod:`.losses`); None: every
        step is Pyro's.
    optimizer : MappedOptimizer or None
        The one optimizer over every param; None: ``parts.optim``.
    peers : Peers
        Who else takes each step (default: no one).
    known_params : callable or None
        The parameters that exist now (default: the param store's); a
        program whose params are not all among them is not replayed.
    reason : str
        Why this engine, until the trainer finds another reason.
    """

    def __init__(
        self,
        parts: Parts,
        settings: Settings,
        *,
        loss_fn: LossFn | None = None,
        optimizer: MappedOptimizer | None = None,
        peers: Peers = ALONE,
        known_params: Callable[[], Iterable[torch.Tensor]] | None = None,
        reason: str = "asked for",
    ):
        self.parts = attrs.evolve(
            parts, model=peers.wrap(parts.model), guide=peers.wrap(parts.guide)
        )
        self.settings, self.loss_fn, self.optimizer = settings, loss_fn, optimizer
        self.peers, self.known_params = peers, known_params or _store_params
        eager = settings.mode == "eager" or loss_fn is None
        waits = settings.mode == "auto"
        self.state = State(
            engine="eager" if eager or waits else settings.mode,
            reason=reason,
            eager=eager,
            lift=settings.lift_numbers,
        )

    @property
    def engine(self) -> str:
        """What ran the last step: ``"eager"``, ``"recorded"`` or ``"compiled"``."""
        return self.state.engine

    @property
    def reason(self) -> str:
        """Why (with the ranks of a distributed fit)."""
        return self.peers.describe(self.state.reason)

    @property
    def tensors(self) -> list[torch.Tensor]:
        """The program's inputs among the current step's model arguments."""
        args, kwargs = self.state.inputs
        return split_args(args, kwargs, self.state.lift)[0]

    def zero_grads(self) -> None:
        """Drop every gradient (after an interrupted or failed step)."""
        zero_all_grads(self.state.params)

    def step(self, number: int, args: tuple, kwargs: dict) -> float:
        """Run step ``number`` on the model arguments; return its loss.

        Raises
        ------
        BadStep
            When the loss or a gradient is not finite; nothing was updated.
        """

        def run() -> float:
            return self._step(number, *self.peers.inputs(args, kwargs))

        return self.peers.guarded(number, self.parts, args, kwargs, run)

    def _step(self, number: int, args: tuple, kwargs: dict) -> float:
        program = self.program_for(number, args, kwargs)
        if program is None:
            loss, params = self._eager_grads()
        else:
            params = self.state.params
            loss_t, grads = program(list(params.values()), self.tensors)
            for p, g in zip(params.values(), grads):
                p.grad = g
            loss = float(loss_t)
        loss = self.peers.reduce(number, loss, params)
        if program is None or not self.peers.alone or not bool(program.finite):
            check_finite(number, loss, {n: p.grad for n, p in params.items()})
        self._update(list(params.values()))
        if not self.state.params and not self.state.eager:
            self.fall_back("the step has no params to learn", warn=False)
        return loss

    def _eager_grads(self) -> tuple[float, dict[str, torch.Tensor]]:
        args, kwargs = self.state.inputs
        start = time.perf_counter()
        loss, params = eager_loss_and_grads(self.parts, args, kwargs)
        self.state.eager_ms = 1000.0 * (time.perf_counter() - start)
        self.state.params.update(params)
        return loss, params

    def _update(self, params: list[torch.Tensor]) -> None:
        if self.optimizer is not None:
            self.optimizer.step(params)
            return
        self.parts.optim(params)
        for p in params:
            p.grad = None

    def note_params(self, params: dict[str, torch.Tensor]) -> None:
        """The params an eager step taken elsewhere used, for the next program."""
        self.state.params.update(params)

    def program_for(self, number: int, args: tuple, kwargs: dict) -> StepProgram | None:
        """The program that runs step ``number`` on these inputs (recorded and
        checked here when their signature is new), or None to run eager."""
        self.state.inputs = (args, kwargs)
        state = self.state
        if state.eager or not self._records(number) or not state.params:
            return None
        alive = {id(p) for p in self.known_params()}
        if any(id(p) not in alive for p in state.params.values()):
            state.params = {}  # a param was replaced: one eager step finds them
            return None
        key = self._key()
        program = state.programs.get(key)
        if program is None:
            return self._new_program(number)
        state.programs.move_to_end(key)
        program.replays += 1
        every = self.settings.check_every
        if program.replays <= self.settings.check_first or (
            every and number % every == 0
        ):
            mismatch = replay_differs(self, program, one_seed=True)
            if mismatch:
                self.fall_back(f"step {number} differs from eager: {mismatch}")
                return None
        state.engine = "compiled" if program.compiled else "recorded"
        return program

    def _records(self, number: int) -> bool:
        """Whether steps are recorded by now (``"auto"`` weighs it first)."""
        settings, state = self.settings, self.state
        if settings.mode != "auto" or state.decided:
            return True
        if settings.steps is None:
            if number <= RECORD_AFTER:
                state.reason = f"auto: Pyro's step for the first {RECORD_AFTER} steps"
                return False
            state.decided = True
            state.reason = f"auto: recorded after {RECORD_AFTER} steps of Pyro's"
            return True
        if number <= 2:  # step 1 sets up, step 2 is timed
            state.reason = "auto: timing Pyro's step"
            return False
        state.decided = True
        left = settings.steps - number + 1
        pays, sums = settings.costs.record_pays_off(left, state.eager_ms)
        if not pays:
            self.fall_back(f"auto: not recorded: {sums}", warn=False)
            return False
        state.reason = f"auto: recorded: {sums}"
        return True

    def _key(self) -> tuple:
        args, kwargs = self.state.inputs
        params = list(self.state.params.items())
        return signature(params, args, kwargs, self.state.lift)

    def _new_program(self, number: int) -> StepProgram | None:
        state = self.state
        if len(state.programs) >= self.settings.max_programs:
            if not self.settings.evict:
                self.fall_back(
                    "the inputs changed signature more than "
                    f"{self.settings.max_programs} times"
                )
                return None
            state.programs.popitem(last=False)  # the least recently used
        program = record_checked(self, number)
        if program is not None:
            state.programs[self._key()] = program  # lifting may have changed
        return program

    def fall_back(self, reason: str, warn: bool = True) -> None:
        """Run eager from now on, for ``reason`` (with a warning if ``warn``)."""
        state = self.state
        state.eager, state.engine, state.reason = True, "eager", reason
        if warn:
            warnings.warn(
                f"{self.settings.who} runs eager: {reason}",
                RuntimeWarning,
                stacklevel=5,
            )
