"""End to end: a whole fit with ``guide_core.fit`` against Pyro's plain SVI loop.

For each model and guide (``auto_normal`` by default), three fresh processes
(:mod:`benchmarks.child`, each with an empty inductor cache, as a user's
first fit):

- ``ours``: ``guide_core.fit(model, guide, *data, steps=N, tol=None,
  engine="auto")``, all N steps, timed from building the guide to the return
  (so recording and compiling are included);
- ``ours_conv``: the same fit with ``tol=0.01``, which stops at convergence:
  our time to convergence, compile included;
- ``pyro``: ``SVI(model, PyroGuide(model), Adam, Trace_ELBO)`` stepped N
  times, each step timed, so its time to convergence is read off.

Convergence is Stan's relative-ELBO-change rule with tolerance 0.01, replayed
on the losses by :func:`guide_core.workflow.fitting.loop.convergence_step` (the rule
``fit`` itself stops by). The final loss is the mean of the last 100 losses,
with their standard deviation as the noise.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pyro
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from guide_core.workflow.fitting.loop import convergence_step, fit

from .probes import run_child

__all__ = ["E2E_GUIDES", "STAN_TOL", "WINDOW", "fit_side", "run_all"]

E2E_GUIDES = ("auto_normal",)
STAN_TOL = 0.01  # Stan's default tol_rel_obj
WINDOW = 50  # fit's default smoothing window
_TAIL = 100


def _summary(losses: list[float], steps: int) -> dict[str, Any]:
    tail = losses[-_TAIL:]
    return {
        "steps": len(losses),
        "converged_at": convergence_step(
            losses, tol=STAN_TOL, window=WINDOW, steps=steps
        ),
        "final_loss": statistics.fmean(tail) if tail else None,
        "final_sd": statistics.stdev(tail) if len(tail) > 1 else None,
    }


def fit_side(req: dict[str, Any], case: Any, meter: Any) -> dict[str, Any]:
    """One side of an end-to-end comparison, in a probe process."""
    from guide_core import registry

    from .harness import side_factories

    steps, side = req["steps"], req["side"]
    ours_cls, pyro_cls, _ = side_factories(registry.info(req["guide"]), None)
    meter.baseline()
    meter.start()
    start = time.perf_counter()
    if side == "pyro":
        pyro.set_rng_seed(req["seed"])
        svi = SVI(
            case.model, pyro_cls(case.model), Adam({"lr": req["lr"]}), Trace_ELBO()
        )
        losses, elapsed = [], []
        for _ in range(steps):
            losses.append(float(svi.step(*case.args)))
            elapsed.append(time.perf_counter() - start)
        seconds = elapsed[-1]
        out = {"engine": "eager (SVI.step)", "reason": ""}
    else:
        done = fit(
            case.model,
            ours_cls(case.model),
            *case.args,
            optim=Adam({"lr": req["lr"]}),
            start=None,  # the engines against Pyro's loop, from the same start
            steps=steps,
            tol=STAN_TOL if side == "ours_conv" else None,
            window=WINDOW,
            progress=False,
            khat=False,
            seed=req["seed"],
            engine=req.get("engine", "auto"),
        )
        seconds = time.perf_counter() - start
        losses = list(done.losses)
        out = {"engine": done.engine, "reason": done.engine_reason}
    meter.stop()
    out.update(_summary(losses, steps), seconds=seconds, **meter.as_dict())
    if side == "pyro" and out["converged_at"]:
        out["conv_seconds"] = elapsed[out["converged_at"] - 1]
    return out


def run_all(cases: list[Any], cfg: Any) -> list[dict[str, Any]]:
    """Every end-to-end row: each guide of ``cfg.e2e_guides`` on each model."""
    from guide_core import registry

    from .harness import pyro_class

    rows = []
    for spec in [registry.info(name) for name in cfg.e2e_guides]:
        for case in cases:
            base = {
                "kind": "end_to_end",
                "guide": spec.name,
                "model": case.name,
                "quick": cfg.quick,
                "seed": cfg.seed,
                "lr": cfg.lr,
                "steps": cfg.e2e_steps,
                "threads": cfg.threads,
                "validate": cfg.validate,
            }
            row: dict[str, Any] = {"guide": spec.name, "model": case.name}
            for side in ("ours", "ours_conv", "pyro"):
                if side == "pyro" and pyro_class(spec) is None:
                    row[side] = {
                        "error": f"pyro.infer.autoguide has no {spec.class_name}"
                    }
                else:
                    row[side] = run_child({**base, "side": side})
            rows.append(row)
    return rows
