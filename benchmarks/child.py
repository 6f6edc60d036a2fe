"""A probe process: ``python -m benchmarks.child '{"kind": ...}'``.

Started by :func:`benchmarks.probes.run_child`, one per measurement, it prints
one JSON object on its last line of output. Kinds:

``side``
    Peak memory of one side of a cell (``ours``, ``pyro``, an engine or
    ``pyro_jit``): the same :class:`~benchmarks.timing.Runner` as the timing,
    ``warmup`` untimed steps, then ``steps`` steps over which the peak is taken.
``numpyro``
    NumPyro's jitted step (:mod:`benchmarks.numpyro_side`).
``end_to_end``
    One whole fit (:func:`benchmarks.end_to_end.fit_side`).

Memory is the peak RSS above a baseline taken after the imports, the data and
the side's one-time machinery (a few steps of the same side on the quick tiny
model, whose RSS is reported as ``machinery_mib``) that every model shares
(:class:`benchmarks.memory.PeakMeter`).
"""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

import pyro
import pyro.infer.autoguide  # noqa: F401 - imported before the baseline
import torch
import torch._dynamo  # noqa: F401 - compile machinery: shared, not a side's cost
from pyro.infer import JitTrace_ELBO

from guide_core import registry

from .harness import PYRO_JIT, side_factories
from .memory import MIB, PeakMeter, current_rss
from .models import build_model
from .timing import Runner, error_text

_DTYPES = {"torch.float32": torch.float32, "torch.float64": torch.float64}


def _side(req: dict[str, Any], case: Any, meter: PeakMeter) -> dict[str, Any]:
    spec = registry.info(req["guide"])
    ours_cls, pyro_cls, _ = side_factories(spec, req.get("backend"))
    side = req["side"]
    kwargs: dict[str, Any] = {"seed": req["seed"], "lr": req["lr"]}
    if side in ("pyro", PYRO_JIT):
        build = pyro_cls
        if side == PYRO_JIT:
            kwargs["elbo"] = JitTrace_ELBO
    else:
        build = ours_cls
        if side != "ours":
            kwargs["engine"] = side
    machinery = _warm_machinery(build, kwargs) if req.get("warm", True) else None
    meter.baseline()
    runner = Runner(build, case, **kwargs)
    runner.run(req["warmup"], timed=False)
    meter.start()
    runner.run(req["steps"], timed=True)
    meter.stop()
    if runner.result.error:
        return {"error": runner.result.error}
    out = {"ms": runner.result.ms_per_step, "ran": runner.engine, **meter.as_dict()}
    return {**out, "machinery_mib": machinery}


def _warm_machinery(build: Any, kwargs: dict[str, Any]) -> float | None:
    """Pay the process's one-time costs of a side first; return their MiB.

    The first SVI step in a process initializes Pyro's machinery, the first
    recorded step torch's tracer, the first compiled step inductor (its
    modules and compiler): the same for every model and guide, and paid once
    per process, not per fit. A few steps of the same side on the quick tiny
    model pay them before the baseline, so the side's own figure is its
    params, optimizer state, program and step temporaries; the RSS those
    warm-up steps left is reported apart (``machinery_mib``).
    """
    gc.collect()
    before = current_rss()
    warm = Runner(build, build_model("tiny", quick=True), **kwargs)
    warm.run(3, timed=False)
    del warm
    gc.collect()
    after = current_rss()
    return None if before is None or after is None else max(0, after - before) / MIB


def answer(req: dict[str, Any]) -> dict[str, Any]:
    """Carry out one probe request and return its JSON-ready answer."""
    torch.set_default_dtype(_DTYPES[req.get("dtype", "torch.float32")])
    if req.get("threads") is not None:
        torch.set_num_threads(req["threads"])
    pyro.enable_validation(bool(req.get("validate")))
    registry.names()  # load the plugins before the baseline
    case = build_model(req["model"], quick=req["quick"])
    meter = PeakMeter()
    kind = req["kind"]
    if kind == "side":
        return _side(req, case, meter)
    if kind == "numpyro":
        from .numpyro_side import time_numpyro

        return time_numpyro(
            req["class_name"],
            case.name,
            case.args,
            seed=req["seed"],
            lr=req["lr"],
            warmup=req["warmup"],
            steps=req["steps"],
            meter=meter,
        )
    if kind == "end_to_end":
        from .end_to_end import fit_side

        return fit_side(req, case, meter)
    raise ValueError(f"unknown probe kind {kind!r}")


def main(argv: list[str]) -> int:
    """Answer the request in ``argv[0]``; errors become ``{"error": ...}``."""
    try:
        out = answer(json.loads(argv[0]))
    except Exception as exc:  # noqa: BLE001 - the parent reports it in the cell
        out = {"error": error_text(exc)}
    sys.stdout.flush()
    print("\n" + json.dumps(out, allow_nan=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
