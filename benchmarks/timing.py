"""Timing: SVI runners stepped alternately in blocks, and the model-only floor.

Protocol for one (guide, model) cell (see :func:`time_pair`):

1. Each side (ours, Pyro's) gets a :class:`~benchmarks.isolation.Slot`: its own
   empty param store and an RNG stream seeded identically for both sides.
2. Each side builds its guide and an ``SVI(model, guide, Adam(lr), Trace_ELBO())``
   inside its slot, then runs ``warmup`` untimed steps (the first creates the
   parameters and triggers any lazy set-up).
3. ``rounds`` rounds follow; in each, every side runs a block of ``steps`` timed
   steps. The order flips every round (ours-Pyro, Pyro-ours, ...) so drifts in
   machine load and cache state hit both sides alike. Python's garbage collector
   is paused during each block (a young-generation collection runs before each
   block, a full one once per cell), so no collection pause lands in a timing.
4. The reported time is the median over all timed steps of a side; the final
   loss is the mean of a side's last ``loss_window`` losses. Both sides ran the
   same number of steps from the same seed, so their losses are comparable.

A side that raises (while building, warming up or timing) is recorded with the
error text and stops; the other side carries on alone.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from pyro.poutine.util import site_is_subsample

from guide_core.workflow.engines import Settings, make_trainer

from .isolation import Slot
from .models import ModelCase

__all__ = [
    "Runner",
    "SideResult",
    "error_text",
    "fixed_latents",
    "measure_floor",
    "time_pair",
]


def error_text(exc: BaseException) -> str:
    """Return ``"ExcType: message"`` for an exception, on one line."""
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _sync() -> None:
    if torch.get_default_device().type == "cuda":
        torch.cuda.synchronize()


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Only the young generations: a full collection costs ~0.1 s with torch loaded
    # and would dominate a quick run. time_pair does one full collection per cell.
    gc.collect(1)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class SideResult:
    """What one side of a cell measured.

    Attributes
    ----------
    times_ms : list of float
        Wall time of each timed SVI step, in milliseconds.
    losses : list of float
        The loss of every step, warm-up included.
    error : str or None
        The error text if this side raised, else ``None``.
    """

    times_ms: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def ms_per_step(self) -> float | None:
        """Median milliseconds per timed step, or ``None`` if none ran."""
        if self.error is not None or not self.times_ms:
            return None
        return statistics.median(self.times_ms)

    def final_loss(self, window: int = 10) -> float | None:
        """Mean of the last ``window`` losses, or ``None`` after an error."""
        if self.error is not None or not self.losses:
            return None
        return statistics.fmean(self.losses[-window:])


class Runner:
    """One guide trained by SVI on one model inside its own :class:`Slot`.

    Parameters
    ----------
    build_guide : callable
        ``build_guide(model)`` returns the guide.
    case : ModelCase
        The model and its data.
    seed : int
        Seed of the runner's RNG stream.
    lr : float
        Adam learning rate.
    engine : str or None
        ``None``: ``SVI.step``. Else a :func:`guide_core.fit` engine
        (``"eager"``, ``"recorded"``, ``"compiled"``, ``"auto"``) steps it; its
        first steps record (and compile), so give it warm-up steps.
    elbo : type
        The ELBO class of the ``SVI`` (``JitTrace_ELBO`` for Pyro's own
        traced step).
    """

    def __init__(
        self,
        build_guide: Callable[[Callable[..., Any]], Any],
        case: ModelCase,
        seed: int = 0,
        lr: float = 0.01,
        engine: str | None = None,
        elbo: type = Trace_ELBO,
    ) -> None:
        self.case = case
        self.slot = Slot(seed)
        self.result = SideResult()
        self.svi: SVI | None = None
        self.trainer: Any = None
        self._number = 0
        with self.slot.active():
            try:
                guide = build_guide(case.model)
                elbo = elbo()
                self.svi = SVI(case.model, guide, Adam({"lr": lr}), elbo)
                if engine is not None:
                    settings = Settings(steps=10**6)
                    self.trainer = make_trainer(engine, self.svi, elbo, settings)
            except Exception as exc:  # noqa: BLE001 - reported in the cell
                self.result.error = error_text(exc)

    @property
    def engine(self) -> str | None:
        """The engine that ran the last step (None for plain ``SVI.step``)."""
        return None if self.trainer is None else self.trainer.engine

    def _step(self, args: tuple) -> float:
        if self.trainer is None:
            assert self.svi is not None
            return self.svi.step(*args)
        self._number += 1
        return self.trainer.step(self._number, args, {})

    @property
    def ok(self) -> bool:
        """Whether this runner has not failed."""
        return self.result.error is None

    def run(self, n: int, timed: bool) -> None:
        """Run ``n`` SVI steps inside the slot; record losses (and times)."""
        if not self.ok or self.svi is None:
            return
        args = self.case.args
        with self.slot.active(), _gc_paused():
            try:
                for _ in range(n):
                    start = time.perf_counter()
                    loss = self._step(args)
                    _sync()
                    elapsed = time.perf_counter() - start
                    self.result.losses.append(float(loss))
                    if timed:
                        self.result.times_ms.append(1e3 * elapsed)
            except Exception as exc:  # noqa: BLE001 - reported in the cell
                self.result.error = error_text(exc)


def time_pair(
    runners: Sequence[Runner], warmup: int, rounds: int, steps: int
) -> list[SideResult]:
    """Warm up every runner, then time them in alternating blocks.

    Parameters
    ----------
    runners : sequence of Runner
        Usually ``[ours, pyro]``.
    warmup : int
        Untimed steps per runner before timing.
    rounds : int
        Number of rounds; the runner order is reversed every other round.
    steps : int
        Timed steps per runner per round.

    Returns
    -------
    list of SideResult
        One per runner, in the order given.
    """
    gc.collect()
    for runner in runners:
        runner.run(warmup, timed=False)
    for r in range(rounds):
        order = list(runners) if r % 2 == 0 else list(runners)[::-1]
        for runner in order:
            runner.run(steps, timed=True)
    return [runner.result for runner in runners]


def fixed_latents(case: ModelCase, seed: int = 0) -> dict[str, torch.Tensor]:
    """Draw every latent site of ``case`` once from the prior, as leaf tensors.

    The draw uses a private :class:`Slot`, so neither the global RNG nor the
    param store is touched. The values require grad so that ``backward`` in
    :func:`measure_floor` does the work a guide's parameters would cause.
    """
    with Slot(seed).active():
        trace = poutine.trace(case.model).get_trace(*case.args)
    return {
        name: site["value"].detach().clone().requires_grad_(True)
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not site_is_subsample(site)
    }


def measure_floor(case: ModelCase, repeats: int, seed: int = 0) -> list[float]:
    """Time the model alone: trace, ``log_prob_sum`` and ``backward``, no guide.

    Latents are conditioned on fixed values (:func:`fixed_latents`). One untimed
    call precedes ``repeats`` timed ones.

    Returns
    -------
    list of float
        Milliseconds per repeat.
    """
    latents = fixed_latents(case, seed)
    conditioned = poutine.condition(case.model, data=latents)
    times: list[float] = []
    with _gc_paused():
        for i in range(repeats + 1):
            for value in latents.values():
                value.grad = None
            start = time.perf_counter()
            trace = poutine.trace(conditioned).get_trace(*case.args)
            log_p = trace.log_prob_sum()
            log_p.backward()
            _sync()
            elapsed = time.perf_counter() - start
            if i and math.isfinite(elapsed):
                times.append(1e3 * elapsed)
    return times
