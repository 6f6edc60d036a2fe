"""The benchmark driver: pick guides and models, run every cell, collect results.

Use :func:`run_benchmarks` from Python (the tests do) or ``python -m benchmarks``
from the shell. Ratios come from one run on one machine and are only reported;
nothing here asserts on them.
"""

from __future__ import annotations

import datetime
import functools
import os
import platform
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pyro
import pyro.infer.autoguide as pyro_autoguide
import torch
from pyro.infer import JitTrace_ELBO

from guide_core.workflow.engines import ENGINES

from . import end_to_end, probes
from .end_to_end import E2E_GUIDES
from .models import ModelCase, build_suite
from .timing import Runner, SideResult, error_text, measure_floor, time_pair

PYRO_JIT = "pyro_jit"  # Pyro's guide under JitTrace_ELBO, a column like an engine

__all__ = [
    "BenchConfig",
    "BenchResult",
    "CellResult",
    "machine_info",
    "pyro_class",
    "run_benchmarks",
    "run_cell",
    "select_guides",
]

# (steps per block, rounds, warm-up steps) for a full and a --quick run.
_DEFAULTS = {False: (20, 5, 10), True: (3, 2, 2)}


@dataclass(frozen=True)
class BenchConfig:
    """Settings of one benchmark run; ``None`` fields take the mode's default.

    Attributes
    ----------
    guides, models : tuple of str or None
        Registry guide names and suite model names to run (default: all).
    steps : int or None
        Timed steps per side per round (default 20, or 3 with ``quick``).
    rounds : int or None
        Alternating rounds (default 5, or 2 with ``quick``).
    warmup : int or None
        Untimed steps per side before timing (default 10, or 2 with ``quick``).
    floor_repeats : int or None
        Timed repeats of the model-only floor (default ``steps * rounds``).
    quick : bool
        Small problem sizes and few steps, for smoke tests.
    threads : int or None
        ``torch.set_num_threads`` for the run (restored after); ``None`` keeps it.
    seed : int
        Seed shared by both sides of every cell.
    lr : float
        Adam learning rate.
    loss_window : int
        The final loss is the mean of this many last losses.
    validate : bool
        Run with Pyro's distribution validation on (off by default: it is
        overhead common to both sides that hides the guides' own cost).
    backend : str or None
        ``backend=`` for guides that take one (AutoGaussian); Pyro's side gets
        the same back end when Pyro has it, else its default. ``None`` runs
        every back end the guide lists, one cell each.
    memory : bool
        Also measure each side's peak memory, each in a fresh process
        (:mod:`benchmarks.probes`).
    numpyro : bool
        Also time NumPyro's guide of the same class name under a jitted
        ``svi.update``, where ``numpyro`` is installed.
    end_to_end : bool
        Also time 2,000-step fits end to end (:mod:`benchmarks.end_to_end`).
    e2e_steps : int
        Steps of an end-to-end fit (2,000; fewer with ``quick``).
    e2e_guides : tuple of str
        Registry names of the guides fitted end to end.
    engines : tuple of str
        :func:`guide_core.fit` engines (``"recorded"``, ``"compiled"``, ...)
        to time our guide under too, each a side of its own in the same
        alternating rounds (their recording and compiling fall in warm-up);
        ``"pyro_jit"`` times Pyro's guide under ``JitTrace_ELBO`` instead.
    """

    guides: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    steps: int | None = None
    rounds: int | None = None
    warmup: int | None = None
    floor_repeats: int | None = None
    quick: bool = False
    threads: int | None = 1
    seed: int = 0
    lr: float = 0.01
    loss_window: int = 10
    validate: bool = False
    backend: str | None = None
    engines: tuple[str, ...] = ()
    memory: bool = False
    numpyro: bool = False
    end_to_end: bool = False
    e2e_steps: int | None = None
    e2e_guides: tuple[str, ...] = E2E_GUIDES

    def resolved(self) -> BenchConfig:
        """Return a copy with every ``None`` count filled in."""
        steps, rounds, warmup = _DEFAULTS[self.quick]
        steps = steps if self.steps is None else self.steps
        rounds = rounds if self.rounds is None else self.rounds
        warmup = warmup if self.warmup is None else self.warmup
        floor = steps * rounds if self.floor_repeats is None else self.floor_repeats
        for name, value in [("steps", steps), ("rounds", rounds), ("floor", floor)]:
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if warmup < 0:
            raise ValueError(f"warmup must be non-negative, got {warmup}")
        for engine in self.engines:
            if engine not in (*ENGINES, PYRO_JIT):
                raise ValueError(
                    f"engines must be among {', '.join(ENGINES)}, {PYRO_JIT}, "
                    f"got {engine!r}"
                )
        e2e = (
            (200 if self.quick else 2000) if self.e2e_steps is None else self.e2e_steps
        )
        return replace(
            self,
            steps=steps,
            rounds=rounds,
            warmup=warmup,
            floor_repeats=floor,
            e2e_steps=e2e,
        )


@dataclass
class CellResult:
    """The measurements of one (guide, model) cell."""

    guide: str
    class_name: str
    model: str
    ours: SideResult
    pyro: SideResult
    backend: str | None = None
    floor_ms: float | None = None
    floor_error: str | None = None
    loss_window: int = 10
    engines: dict[str, SideResult] = field(default_factory=dict)
    engine_used: dict[str, str | None] = field(default_factory=dict)
    pyro_missing: str | None = None
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    numpyro: dict[str, Any] | None = None

    @property
    def not_applicable(self) -> str | None:
        """Why our guide does not apply to the model, for a guide Pyro lacks.

        Such a guide has no oracle; one that refused the model before its
        first step (building or setting up) is reported as ``n/a`` with its
        message rather than as an error.
        """
        if self.pyro_missing and self.ours.error and not self.ours.losses:
            return self.ours.error
        return None

    def _over(self, num: float | None, den: float | None) -> float | None:
        return None if num is None or den is None or den <= 0 else num / den

    @property
    def ratio(self) -> float | None:
        """Ours / Pyro's median ms per step."""
        return self._over(self.ours.ms_per_step, self.pyro.ms_per_step)

    def as_dict(self) -> dict[str, Any]:
        """Return the cell as a JSON-ready dict (raw step times included)."""
        ours_ms, pyro_ms = self.ours.ms_per_step, self.pyro.ms_per_step
        return {
            "guide": self.guide,
            "class_name": self.class_name,
            "model": self.model,
            "backend": self.backend,
            "ours_ms": ours_ms,
            "pyro_ms": pyro_ms,
            "ratio": self.ratio,
            "floor_ms": self.floor_ms,
            "ours_over_floor": self._over(ours_ms, self.floor_ms),
            "pyro_over_floor": self._over(pyro_ms, self.floor_ms),
            "final_loss_ours": self.ours.final_loss(self.loss_window),
            "final_loss_pyro": self.pyro.final_loss(self.loss_window),
            "ours_error": self.ours.error,
            "pyro_missing": self.pyro_missing,
            "not_applicable": self.not_applicable,
            "memory": self.memory,
            "numpyro": self.numpyro,
            "pyro_error": self.pyro.error,
            "floor_error": self.floor_error,
            "ours_steps_ms": self.ours.times_ms,
            "pyro_steps_ms": self.pyro.times_ms,
            "engines": {
                name: {
                    "ms": side.ms_per_step,
                    "over_pyro": self._over(side.ms_per_step, pyro_ms),
                    "final_loss": side.final_loss(self.loss_window),
                    "error": side.error,
                    "ran": self.engine_used.get(name),
                    "steps_ms": side.times_ms,
                }
                for name, side in self.engines.items()
            },
        }


@dataclass
class BenchResult:
    """Every cell of a run, the settings used and the machine it ran on."""

    config: BenchConfig
    cells: list[CellResult] = field(default_factory=list)
    no_pyro: dict[str, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    end_to_end: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def pyro_class(spec: Any) -> type | None:
    """Pyro's class of the same ``class_name`` as ``spec``, or None."""
    return getattr(pyro_autoguide, spec.class_name, None)


def select_guides(
    names: tuple[str, ...] | list[str] | None = None,
) -> tuple[list[Any], dict[str, str]]:
    """Return the registered guide specs to benchmark and those Pyro lacks.

    Every guide is benchmarked; one whose ``class_name`` is in
    ``pyro.infer.autoguide`` is timed against Pyro's class, one that is not
    is timed alone (against the model floor). Naming a guide in ``names`` that
    is not registered raises the registry's error.

    Returns
    -------
    (list of GuideSpec, dict of str to str)
        The specs to run, and ``{guide name: reason}`` for those without a
        Pyro counterpart (they are among the specs).
    """
    from guide_core import registry

    wanted = registry.names() if names is None else list(names)
    specs, no_pyro = [], {}
    for name in wanted:
        spec = registry.info(name)
        specs.append(spec)
        if pyro_class(spec) is None:
            no_pyro[spec.name] = f"pyro.infer.autoguide has no {spec.class_name}"
    return specs, no_pyro


def _required_args(name: str) -> dict[str, Any]:
    """Arguments a guide cannot be built without, the same for both sides.

    ``AutoNormalizingFlow`` takes the flow to fit: two affine autoregressive
    transforms, as in Pyro's documentation of it.
    """
    if name == "auto_normalizing_flow":
        from pyro.distributions.transforms import affine_autoregressive, iterated

        flow = functools.partial(iterated, 2, affine_autoregressive)
        return {"init_transform_fn": flow}
    return {}


def side_factories(spec: Any, backend: str | None) -> tuple[Any, Any, str | None]:
    """Our guide's factory, Pyro's (or None) and the back end actually used."""
    pyro_cls = pyro_class(spec)
    ours_cls = spec.factory
    required = _required_args(spec.name)
    if required:
        ours_cls = functools.partial(ours_cls, **required)
        pyro_cls = None if pyro_cls is None else functools.partial(pyro_cls, **required)
    if backend is not None and spec.backends:
        ours_cls = functools.partial(ours_cls, backend=backend)
        if backend in getattr(pyro_cls, "backends", ()):
            pyro_cls = functools.partial(pyro_cls, backend=backend)
    else:
        backend = None
    return ours_cls, pyro_cls, backend


def run_cell(
    spec: Any, case: ModelCase, config: BenchConfig, backend: str | None = None
) -> CellResult:
    """Time one guide (ours and Pyro's) on one model; never raises for a guide.

    ``backend`` (default ``config.backend``) is passed to guides that take one.
    """
    cfg = config.resolved()
    backend = cfg.backend if backend is None else backend
    ours_cls, pyro_cls, backend = side_factories(spec, backend)
    ours = Runner(ours_cls, case, seed=cfg.seed, lr=cfg.lr)
    theirs = None if pyro_cls is None else Runner(pyro_cls, case, cfg.seed, cfg.lr)
    extra = {
        e: Runner(pyro_cls, case, seed=cfg.seed, lr=cfg.lr, elbo=JitTrace_ELBO)
        if e == PYRO_JIT
        else Runner(ours_cls, case, seed=cfg.seed, lr=cfg.lr, engine=e)
        for e in cfg.engines
        if e != PYRO_JIT or pyro_cls is not None
    }
    sides = [ours, *([theirs] if theirs else []), *extra.values()]
    time_pair(sides, cfg.warmup, cfg.rounds, cfg.steps)
    cell = CellResult(
        guide=spec.name,
        class_name=spec.class_name,
        model=case.name,
        ours=ours.result,
        pyro=SideResult() if theirs is None else theirs.result,
        backend=backend,
        loss_window=cfg.loss_window,
        engines={e: r.result for e, r in extra.items()},
        engine_used={e: r.engine for e, r in extra.items()},
        pyro_missing=None
        if pyro_cls is not None
        else f"pyro.infer.autoguide has no {spec.class_name}",
    )
    if cfg.memory:
        cell.memory = probes.cell_memory(cell, cfg)
    if cfg.numpyro and probes.numpyro_missing() is None:
        cell.numpyro = probes.cell_numpyro(cell, cfg)
    try:
        cell.floor_ms = statistics.median(
            measure_floor(case, cfg.floor_repeats, seed=cfg.seed)
        )
    except Exception as exc:  # noqa: BLE001 - reported in the cell
        cell.floor_error = error_text(exc)
    return cell


def machine_info() -> dict[str, Any]:
    """Versions, threads and platform, for the JSON report."""
    try:
        import guide_core

        ours = getattr(guide_core, "__version__", "unknown")
    except Exception as exc:  # noqa: BLE001 - the report should still be written
        ours = f"unimportable ({error_text(exc)})"
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "guide_core": ours,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "default_dtype": str(torch.get_default_dtype()),
        "default_device": str(torch.get_default_device()),
    }


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_benchmarks(config: BenchConfig | None = None) -> BenchResult:
    """Run every selected (guide, model) cell.

    The caller's param store and RNG state are left as they were: every side
    runs in its own :class:`~benchmarks.isolation.Slot`.

    Parameters
    ----------
    config : BenchConfig or None
        Settings; the defaults run every guide on every full-size model.

    Returns
    -------
    BenchResult
    """
    cfg = (config or BenchConfig()).resolved()
    specs, no_pyro = select_guides(cfg.guides)
    cases = build_suite(cfg.models, quick=cfg.quick)
    result = BenchResult(cfg, no_pyro=no_pyro)
    if cfg.numpyro and (why := probes.numpyro_missing()):
        result.notes.append(f"No numpyro column: {why}.")
    with _threads(cfg.threads), pyro.validation_enabled(cfg.validate):
        result.machine = machine_info()
        result.machine["validation"] = cfg.validate
        for spec in specs:
            backends = (cfg.backend,) if cfg.backend else spec.backends or (None,)
            for backend in backends:
                for case in cases:
                    result.cells.append(run_cell(spec, case, cfg, backend))
        if cfg.end_to_end:
            result.end_to_end = end_to_end.run_all(cases, cfg)
    return result
