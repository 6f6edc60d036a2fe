"""A trainer's new program: captured, checked against eager, timed, compiled.

For each :func:`~.program.signature` of a step's inputs the step is captured
once and checked against Pyro's own step on the same draws from two seeds
(so that draws baked into the program as constants would be caught); a
capture that lifted Python floats into inputs or reused repeated calls and
fails the check is captured again without. ``"compiled"`` then routes the
program through inductor, unless the compiled program turns out no faster
than the recorded one; ``"auto"`` does so only when the planned steps pay
for the compile (:class:`~.costs.Costs`). Whatever cannot be recorded or
fails the check makes the trainer run eager from then on, with one warning
that says why.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING

import torch

from ...core.seeded import first_mismatch, run_seeded
from .costs import note_seconds
from .eager import eager_loss_and_grads, zero_all_grads
from .losses import NotRecordable
from .program import StepProgram, record

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["record_checked", "replay_differs"]

SEEDS = (0x5EED, 0xC0FFEE)


def record_checked(trainer: Trainer, number: int) -> StepProgram | None:
    """Capture step ``number`` of ``trainer`` as a checked program (compiled
    if its settings ask), or None after the trainer falls back to eager."""
    state, settings = trainer.state, trainer.settings
    start = time.perf_counter()
    params = list(state.params.items())
    args, kwargs = state.inputs
    # without floats as inputs, then without reuse of repeats, if it differs
    attempts = [(lift, reuse) for lift in (True, False) for reuse in (True, False)]
    if not state.lift:
        attempts = attempts[2:]
    for lift, reuse in attempts:
        state.lift = lift
        try:
            program, seconds = run_seeded(
                lambda reuse=reuse, lift=lift: record(
                    trainer.loss_fn,
                    trainer.parts.model,
                    trainer.parts.guide,
                    params,
                    args,
                    kwargs,
                    reuse,
                    lift,
                ),
                SEEDS[0],
                state.params.values(),
            )
        except NotRecordable as exc:
            if lift:
                continue
            trainer.fall_back(f"the step cannot be recorded: {exc}")
            return None
        state.record_seconds.append(seconds)
        try:
            mismatch = replay_differs(trainer, program)
        except Exception as exc:  # noqa: BLE001 - a failing program is not used
            mismatch = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        if not mismatch:
            break
    if mismatch:
        trainer.fall_back(f"the recorded step differs from eager: {mismatch}")
        return None
    note_seconds("record", time.perf_counter() - start)
    replay_ms = time_replays(trainer, program)
    state.engine = "compiled" if settings.mode == "compiled" else "recorded"
    if settings.mode == "auto" and settings.steps is not None:
        if trainer.peers.alone:
            left = settings.steps - number + 1
            pays, sums = settings.costs.compile_pays_off(left, replay_ms)
            state.engine = "compiled" if pays else "recorded"
            state.reason = f"{state.reason}; {sums}"
        else:  # each rank times for itself: they could choose apart
            state.reason += "; not compiled on its own when distributed"
    if state.engine == "compiled":
        _compile(trainer, program, replay_ms)
    return program


def _compile(trainer: Trainer, program: StepProgram, replay_ms: float) -> None:
    state = trainer.state
    program.compile()
    start = time.perf_counter()
    try:
        mismatch = replay_differs(trainer, program, one_seed=True)
    except Exception as exc:  # noqa: BLE001 - inductor failing means recorded
        mismatch = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    seconds = time.perf_counter() - start
    if mismatch:
        program.uncompile()
        state.engine, state.reason = "recorded", f"compile failed: {mismatch}"
        warnings.warn(
            f"{trainer.settings.who}: the compiled step is not used ({mismatch}); "
            "running the recorded step",
            RuntimeWarning,
            stacklevel=6,
        )
        return
    state.compile_seconds.append(seconds)
    note_seconds("compile", seconds)
    compiled_ms = time_replays(trainer, program)
    if compiled_ms >= replay_ms:  # inductor's loops can lose to BLAS calls
        # once more, each timed again, so one noisy timing does not decide
        compiled_ms = time_replays(trainer, program, 5)
        with program.as_recorded():
            replay_ms = time_replays(trainer, program, 5)
    if compiled_ms >= replay_ms:
        program.uncompile()
        state.engine = "recorded"
        state.reason = (
            f"the compiled step ({compiled_ms:.3g} ms) is not faster than "
            f"the recorded one ({replay_ms:.3g} ms)"
        )


def time_replays(trainer: Trainer, program: StepProgram, calls: int = 3) -> float:
    """The fastest of ``calls`` replays, in ms (on a forked random state)."""
    leaves = list(trainer.state.params.values())
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        run_seeded(lambda: program(leaves, trainer.tensors), SEEDS[1], leaves)
        best = min(best, time.perf_counter() - start)
    return 1000.0 * best


def replay_differs(
    trainer: Trainer, program: StepProgram, one_seed: bool = False
) -> str | None:
    """Where a replay differs from Pyro's step on the same draws, or None."""
    params = trainer.state.params
    names, leaves = list(params), list(params.values())
    for seed in SEEDS[:1] if one_seed else SEEDS:
        want_loss, want = run_seeded(lambda: _reference(trainer), seed, leaves)
        got_loss, got = run_seeded(
            lambda: program(leaves, trainer.tensors), seed, leaves
        )
        mismatch = first_mismatch(
            [torch.as_tensor(want_loss, dtype=got_loss.dtype), *want],
            [got_loss, *got],
            ["the loss", *(f"the gradient of {n!r}" for n in names)],
        )
        if mismatch:
            return mismatch
    return None


def _reference(trainer: Trainer) -> tuple[float, list[torch.Tensor | None]]:
    args, kwargs = trainer.state.inputs
    loss, _ = eager_loss_and_grads(trainer.parts, args, kwargs)
    leaves = list(trainer.state.params.values())
    grads = [None if p.grad is None else p.grad.clone() for p in leaves]
    zero_all_grads(trainer.state.params)
    return loss, grads
