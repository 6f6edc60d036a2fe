"""Short fits, end to end in whole processes: ``python -m benchmarks.short_fit``.

A fit of a few steps must be no slower than Pyro's own loop, imports and
set-up included: ``"auto"`` records only when the planned steps pay for the
recording. Each side runs as its own Python process (``--repeats`` times,
alternating), and the cell is its median wall time:

- ``pyro``: ``pyro.infer.SVI`` with ``pyro.infer.autoguide.AutoNormal``,
  ``--steps`` steps of ``svi.step``;
- ``fit_auto``: ``guide_core.fit(model, AutoNormal(model), x, y,
  steps=--steps)`` with its defaults (``engine="auto"``, the Pathfinder
  start, the PSIS k-hat), progress off;
- ``fit_bare``: the same without the two things Pyro's loop does not do,
  ``start=None, khat=False``;
- ``fit_eager``: ``fit_auto`` with ``engine="eager"``;
- ``svi``: ``guide_core.SVI``, as ``pyro`` with one import changed.

The model: a regression with 5 latent values (3 coefficients, an intercept,
a noise scale) over 100 rows.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .report import write_section

__all__ = ["SIDES", "main", "run"]

_MODEL = """
import pyro, torch, pyro.distributions as dist
def model(x, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(b + x @ w, s), obs=y)
g = torch.Generator().manual_seed(0)
x = torch.randn(100, 3, generator=g)
y = x @ torch.tensor([1.0, -0.5, 0.2]) + 0.3 * torch.randn(100, generator=g)
pyro.set_rng_seed(0)
"""
_SVI = """
svi = SVI(model, AutoNormal(model), pyro.optim.Adam({{"lr": 0.01}}), Trace_ELBO())
for _ in range({steps}):
    svi.step(x, y)
"""
SIDES = {
    "pyro": "from pyro.infer import SVI, Trace_ELBO\n"
    "from pyro.infer.autoguide import AutoNormal\n" + _MODEL + _SVI,
    "svi": "from pyro.infer import Trace_ELBO\n"
    "from guide_core import SVI, AutoNormal\n" + _MODEL + _SVI,
    "fit_auto": "from guide_core import AutoNormal, fit\n"
    + _MODEL
    + "fit(model, AutoNormal(model), x, y, steps={steps}, progress=False)\n",
    "fit_bare": "from guide_core import AutoNormal, fit\n"
    + _MODEL
    + "fit(model, AutoNormal(model), x, y, steps={steps}, progress=False, "
    "start=None, khat=False)\n",
    "fit_eager": "from guide_core import AutoNormal, fit\n"
    + _MODEL
    + "fit(model, AutoNormal(model), x, y, steps={steps}, progress=False, "
    "engine='eager')\n",
}


def _once(code: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    return time.perf_counter() - start


def run(steps: int, repeats: int, log=print) -> dict:
    """Each side's process seconds (all repeats and their median)."""
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    for _ in range(repeats):
        for side, code in SIDES.items():
            times[side].append(_once(code.format(steps=steps)))
    out = {
        side: {"seconds": t, "median": statistics.median(t)}
        for side, t in times.items()
    }
    for side in SIDES:
        out[side]["ratio"] = out[side]["median"] / out["pyro"]["median"]
        log(f"{side}: {out[side]['median']:.2f} s ({out[side]['ratio']:.2f}x Pyro)")
    return out


def to_markdown(results: dict, config: dict) -> str:
    lines = [
        "# Short fits, whole processes",
        "",
        f"{config['steps']} steps of a 5-latent regression, one process per run, "
        f"median of {config['repeats']}. Ratio: against Pyro's SVI loop.",
        "",
        "| side | median s | ratio | runs (s) |",
        "|---|---|---|---|",
    ]
    for side, r in results.items():
        runs = ", ".join(f"{t:.2f}" for t in r["seconds"])
        lines.append(f"| {side} | {r['median']:.2f} | {r['ratio']:.2f}x | {runs} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: run, write ``short_fit.md`` and ``.json``, print the table."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.short_fit")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    config = {"steps": args.steps, "repeats": args.repeats}
    results = run(args.steps, args.repeats)
    text = to_markdown(results, config)
    report = {"config": config, "results": results}
    return write_section(args.out, "short_fit", text, report)


if __name__ == "__main__":
    main()
