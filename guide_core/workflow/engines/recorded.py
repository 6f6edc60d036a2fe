"""The recorded and compiled engines: capture, check, replay.

Step 1 runs eager (it creates the guide's params and Pyro's set-up). Then,
for each :func:`~.program.signature` of the inputs, the step is captured
once, checked against Pyro's own step on the same draws from two seeds (so
that draws baked into the program as constants would be caught; a capture
that reused repeated calls and fails it is captured again without), and
replayed from then on; ``"compiled"`` routes it through inductor, unless
the compiled program turns out no faster than the recorded one.
Whatever cannot be recorded or fails the check runs eager from then on,
with one warning that says why. Every step's update goes through one
:class:`~.optim.MappedOptimizer`, eager or not, so the optimizer's state
carries over; between a step's gradients and its update sits the
``reduce_grads`` hook (the distributed engine averages them over the ranks).
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable

import pyro
import torch
from pyro.infer import SVI

from ...core.seeded import first_mismatch, run_seeded
from .costs import compile_pays_off, note_compile_seconds
from .eager import check_finite, eager_loss_and_grads, zero_all_grads
from .losses import LossFn, NotRecordable
from .optim import MappedOptimizer
from .program import StepProgram, record, signature, split_args

__all__ = ["MAX_PROGRAMS", "RecordedTrainer"]

MAX_PROGRAMS = 8  # signatures recorded in one fit before it runs eager
_SEEDS = (0x5EED, 0xC0FFEE)


def _store_params() -> Iterable[torch.Tensor]:
    return (p for _, p in pyro.get_param_store().named_parameters())


def _own_grads(number: int, loss: float, params: dict[str, torch.Tensor]) -> float:
    """The gradients stay this process's own (no all-reduce); the loss as is."""
    return loss


class RecordedTrainer:
    """Steps through a recorded (or compiled) program, eager where it must.

    Parameters
    ----------
    svi : pyro.infer.SVI
        The model, guide and ELBO (its optimizer is not used).
    args, kwargs :
        The model's arguments.
    loss_fn : callable
        The ELBO's loss without value reads (see :mod:`.losses`).
    optimizer : MappedOptimizer
        The one optimizer over every param.
    mode : {"recorded", "compiled", "auto"}
        ``"auto"`` compiles when :func:`~.choose.compile_pays_off`.
    steps : int
        The planned steps (for ``"auto"``).
    check_every : int or None
        Also check the program against eager every this many steps.
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
    known_params : callable or None
        The parameters that exist now (default: the param store's); a
        program whose params are not all among them is not replayed.
    """

    def __init__(
        self,
        svi: SVI,
        args: tuple,
        kwargs: dict,
        *,
        loss_fn: LossFn,
        optimizer: MappedOptimizer,
        mode: str,
        steps: int,
        check_every: int | None = None,
        check_first: int = 0,
        lift_numbers: bool = False,
        max_programs: int = MAX_PROGRAMS,
        evict: bool = False,
        who: str = "guide_core.fit",
        known_params: Callable[[], Iterable[torch.Tensor]] | None = None,
    ):
        self.svi, self.args, self.kwargs = svi, args, kwargs
        self.loss_fn, self.optimizer, self.mode = loss_fn, optimizer, mode
        self.steps, self.check_every = steps, check_every
        self.check_first, self.lift = check_first, lift_numbers
        self.max_programs, self.evict, self.who = max_programs, evict, who
        self.known_params = known_params or _store_params
        self.params: dict[str, torch.Tensor] = {}
        self.programs: OrderedDict[tuple, StepProgram] = OrderedDict()
        self.engine = "compiled" if mode == "compiled" else "recorded"
        self.reason = "asked for" if mode != "auto" else "auto: recordable"
        self.eager = False
        self.record_seconds: list[float] = []
        self.compile_seconds: list[float] = []
        self.on_change: Callable[[], None] = lambda: None
        # (step, loss, {name: param with .grad}) -> the loss to report
        self.reduce_grads: Callable[[int, float, dict[str, torch.Tensor]], float] = (
            _own_grads
        )

    @property
    def tensors(self) -> list[torch.Tensor]:
        """The program's inputs among the model's arguments."""
        return split_args(self.args, self.kwargs, self.lift)[0]

    def set_inputs(self, args: tuple, kwargs: dict) -> None:
        """Use new model arguments from the next step (a new signature records anew)."""
        self.args, self.kwargs = args, kwargs

    def zero_grads(self) -> None:
        """Drop every gradient (after an interrupted or failed step)."""
        zero_all_grads(self.params)

    def step(self, number: int) -> float:
        """Run step ``number``; return its loss."""
        program = self.program_for(number)
        if program is None:
            return self._eager_step(number)
        names, leaves = list(self.params), list(self.params.values())
        loss_t, grads = program(leaves, self.tensors)
        for p, g in zip(leaves, grads):
            p.grad = g
        loss = self.reduce_grads(number, float(loss_t), self.params)
        if self.reduce_grads is not _own_grads or not bool(program.finite):
            check_finite(number, loss, {n: p.grad for n, p in zip(names, leaves)})
        self.optimizer.step(leaves)
        return loss

    def program_for(self, number: int) -> StepProgram | None:
        """The program that runs step ``number`` (recorded and checked here
        when its signature is new), or None where the step runs eager."""
        return None if self.eager or not self.params else self._program(number)

    def note_params(self, params: dict[str, torch.Tensor]) -> None:
        """The params an eager step used (by name), for the next program."""
        self.params.update(params)

    def _eager_step(self, number: int) -> float:
        loss, params = eager_loss_and_grads(self.svi, self.args, self.kwargs)
        self.params.update(params)
        loss = self.reduce_grads(number, loss, params)
        check_finite(number, loss, {n: p.grad for n, p in params.items()})
        self.optimizer.step(list(params.values()))
        if not self.params and not self.eager:
            self._fall_back("the step has no params to learn", warn=False)
        return loss

    def _program(self, number: int) -> StepProgram | None:
        alive = {id(p) for p in self.known_params()}
        if any(id(p) not in alive for p in self.params.values()):
            self.params = {}  # a param was replaced: one eager step finds them again
            return None
        key = self._key()
        program = self.programs.get(key)
        if program is None:
            if len(self.programs) >= self.max_programs:
                if not self.evict:
                    self._fall_back(
                        "the inputs changed signature more than "
                        f"{self.max_programs} times"
                    )
                    return None
                self.programs.popitem(last=False)  # the least recently used
            program = self._record(number)
            if program is not None:
                self.programs[self._key()] = program  # lifting may have changed
            return program
        self.programs.move_to_end(key)
        program.replays += 1
        early = program.replays <= self.check_first
        if early or (self.check_every and number % self.check_every == 0):
            mismatch = self._check(program, _SEEDS[:1])
            if mismatch:
                self._fall_back(f"step {number} differs from eager: {mismatch}")
                return None
        return program

    def _key(self) -> tuple:
        return signature(list(self.params.items()), self.args, self.kwargs, self.lift)

    def _record(self, number: int) -> StepProgram | None:
        params = list(self.params.items())
        # without floats as inputs, then without reuse of repeats, if it differs
        attempts = [(lift, reuse) for lift in (True, False) for reuse in (True, False)]
        if not self.lift:
            attempts = attempts[2:]
        for lift, reuse in attempts:
            self.lift = lift
            try:
                program, seconds = run_seeded(
                    lambda reuse=reuse, lift=lift: record(
                        self.loss_fn,
                        self.svi.model,
                        self.svi.guide,
                        params,
                        self.args,
                        self.kwargs,
                        reuse,
                        lift,
                    ),
                    _SEEDS[0],
                    self.params.values(),
                )
            except NotRecordable as exc:
                if lift:
                    continue
                self._fall_back(f"the step cannot be recorded: {exc}")
                return None
            self.record_seconds.append(seconds)
            try:
                mismatch = self._check(program, _SEEDS)
            except Exception as exc:  # noqa: BLE001 - a failing program is not used
                mismatch = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            if not mismatch:
                break
        if mismatch:
            self._fall_back(f"the recorded step differs from eager: {mismatch}")
            return None
        replay_ms = self._time(program)
        if self.mode == "auto":
            pays, sums = compile_pays_off(self.steps - number + 1, replay_ms)
            self.engine = "compiled" if pays else "recorded"
            self.reason = f"auto: {sums}"
            self.on_change()
        if self.engine == "compiled":
            self._compile(program, replay_ms)
        return program

    def _compile(self, program: StepProgram, replay_ms: float) -> None:
        program.compile()
        start = time.perf_counter()
        try:
            mismatch = self._check(program, _SEEDS[:1])
        except Exception as exc:  # noqa: BLE001 - inductor failing means recorded
            mismatch = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        seconds = time.perf_counter() - start
        if mismatch:
            program.uncompile()
            self.engine, self.reason = "recorded", f"compile failed: {mismatch}"
            warnings.warn(
                f"{self.who}: the compiled step is not used ({mismatch}); "
                "running the recorded step",
                RuntimeWarning,
                stacklevel=4,
            )
            self.on_change()
            return
        self.compile_seconds.append(seconds)
        note_compile_seconds(seconds)
        compiled_ms = self._time(program)
        if compiled_ms >= replay_ms:  # inductor's loops can lose to BLAS calls
            # once more, each timed again, so one noisy timing does not decide
            compiled_ms = self._time(program, 5)
            with program.as_recorded():
                replay_ms = self._time(program, 5)
        if compiled_ms >= replay_ms:
            program.uncompile()
            self.engine = "recorded"
            self.reason = (
                f"the compiled step ({compiled_ms:.3g} ms) is not faster than "
                f"the recorded one ({replay_ms:.3g} ms)"
            )
            self.on_change()

    def _time(self, program: StepProgram, calls: int = 3) -> float:
        """The fastest of ``calls`` replays, in ms (on a forked random state)."""
        leaves = list(self.params.values())
        best = float("inf")
        for _ in range(calls):
            start = time.perf_counter()
            run_seeded(lambda: program(leaves, self.tensors), _SEEDS[1], leaves)
            best = min(best, time.perf_counter() - start)
        return 1000.0 * best

    def _check(self, program: StepProgram, seeds: tuple[int, ...]) -> str | None:
        names, leaves = list(self.params), list(self.params.values())
        for seed in seeds:
            want_loss, want = run_seeded(self._reference, seed, leaves)
            got_loss, got = run_seeded(
                lambda: program(leaves, self.tensors), seed, leaves
            )
            mismatch = first_mismatch(
                [torch.as_tensor(want_loss, dtype=got_loss.dtype), *want],
                [got_loss, *got],
                ["the loss", *(f"the gradient of {n!r}" for n in names)],
            )
            if mismatch:
                return mismatch
        return None

    def _reference(self) -> tuple[float, list[torch.Tensor | None]]:
        loss, _ = eager_loss_and_grads(self.svi, self.args, self.kwargs)
        leaves = list(self.params.values())
        grads = [None if p.grad is None else p.grad.clone() for p in leaves]
        zero_all_grads(self.params)
        return loss, grads

    def _fall_back(self, reason: str, warn: bool = True) -> None:
        self.eager, self.engine, self.reason = True, "eager", reason
        if warn:
            warnings.warn(
                f"{self.who} runs eager: {reason}", RuntimeWarning, stacklevel=4
            )
        self.on_change()
