"""The loops users already have: ``python -m benchmarks.loops``.

Each cell runs the same loop twice in one process, with Pyro's class and with
ours, from the same seed, and reports the wall time ratio (ours / Pyro's,
recording and checks included) and both final losses (the mean of the last
100 steps' losses):

- ``minibatch``: a linear regression over ``--rows`` rows (100,000) in a
  ``TensorDataset``, through ``DataLoader(batch_size=1000, shuffle=True)``,
  for ``--epochs`` epochs, ``svi.step(x, y)`` per batch, the plate's size the
  whole data; ``pyro.infer.SVI`` against ``guide_core.SVI``;
- ``minibatch_steps``: the same steps on batches cut beforehand, so the
  ``DataLoader``'s own time (a fixed cost of both sides: it gathers every
  row of a batch one by one) is out of the ratio;
- ``kl_annealing``: the minibatch loop with a KL weight that changes every
  step (a Python float argument); ours should record once;
- ``elbo_module``: a torch-optimizer loop over Pyro's ``Trace_ELBO()(model,
  guide)`` against ``guide_core.ELBOModule``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch.utils.data import DataLoader, TensorDataset

import guide_core

from .report import write_section

__all__ = ["LOOPS", "main", "run"]

GUIDES = ("AutoNormal", "AutoDiagonalNormal", "AutoMultivariateNormal")
FEATURES = 10


def _data(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, FEATURES, generator=g)
    y = x @ torch.randn(FEATURES, generator=g) + 0.5 * torch.randn(rows, generator=g)
    return x, y


def _model(rows: int) -> Callable:
    def model(x, y=None, kl=1.0):
        with poutine.scale(scale=kl):
            w = pyro.sample("w", dist.Normal(torch.zeros(FEATURES), 1.0).to_event(1))
            b = pyro.sample("b", dist.Normal(0.0, 5.0))
        s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", rows, subsample_size=x.shape[0]):
            pyro.sample("y", dist.Normal(b + x @ w, s), obs=y)

    return model


def _setup(guide_name: str, rows: int) -> tuple:
    """The data, the model and a fresh guide, from a fresh store and seed."""
    x, y = _data(rows)
    model = _model(rows)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    return x, y, model, getattr(guide_core, guide_name)(model)


def _batches(x, y, epochs: int, batch: int, loader: bool):
    if loader:
        data = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)
        for _ in range(epochs):
            yield from data
    else:
        perm = torch.randperm(x.shape[0])
        cut = [perm[i : i + batch] for i in range(0, x.shape[0], batch)]
        batches = [(x[i], y[i]) for i in cut]
        for _ in range(epochs):
            yield from batches


def _svi_loop(ours: bool, guide_name: str, rows: int, epochs: int, batch: int,
              loader: bool, anneal: bool) -> dict:  # fmt: skip
    x, y, model, guide = _setup(guide_name, rows)
    cls = guide_core.SVI if ours else pyro.infer.SVI
    svi = cls(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    steps = epochs * -(-rows // batch)
    losses = []
    start = time.perf_counter()
    for i, (xb, yb) in enumerate(_batches(x, y, epochs, batch, loader)):
        kl = min(1.0, 0.01 + i / steps) if anneal else 1.0
        losses.append(svi.step(xb, yb, kl))
    seconds = time.perf_counter() - start
    out = {"seconds": seconds, "loss": sum(losses[-100:]) / len(losses[-100:])}
    if ours:
        out["engine"] = svi.engine
        trainer = getattr(svi, "_trainer", None)
        out["recordings"] = len(trainer.state.record_seconds) if trainer else 0
    return out


def _module_loop(ours: bool, guide_name: str, rows: int, epochs: int, batch: int,
                 loader: bool, anneal: bool) -> dict:  # fmt: skip
    x, y, model, guide = _setup(guide_name, rows)
    elbo = Trace_ELBO()
    loss_fn = guide_core.ELBOModule(model, guide, elbo) if ours else elbo(model, guide)
    loss_fn(x[:batch], y[:batch])
    optim = torch.optim.Adam(loss_fn.parameters(), lr=0.01)
    losses = []
    start = time.perf_counter()
    for xb, yb in _batches(x, y, epochs, batch, loader):
        optim.zero_grad()
        loss = loss_fn(xb, yb)
        loss.backward()
        optim.step()
        losses.append(float(loss))
    seconds = time.perf_counter() - start
    out = {"seconds": seconds, "loss": sum(losses[-100:]) / len(losses[-100:])}
    if ours:
        out["engine"] = loss_fn.engine
    return out


#: name -> (loop, uses the DataLoader, anneals the KL weight)
LOOPS = {
    "minibatch": (_svi_loop, True, False),
    "minibatch_steps": (_svi_loop, False, False),
    "kl_annealing": (_svi_loop, True, True),
    "elbo_module": (_module_loop, True, False),
}


def run(loops: Sequence[str], guides: Sequence[str], rows: int, epochs: int,
        batch: int, log: Callable = print) -> dict:  # fmt: skip
    """Every loop x guide cell: ``{"pyro": {...}, "ours": {...}, "ratio": r}``."""
    torch.set_num_threads(1)
    results: dict = {}
    for name in loops:
        loop, loader, anneal = LOOPS[name]
        for guide in guides:
            cell = {
                side: loop(side == "ours", guide, rows, epochs, batch, loader, anneal)
                for side in ("pyro", "ours")
            }
            cell["ratio"] = cell["ours"]["seconds"] / cell["pyro"]["seconds"]
            results.setdefault(name, {})[guide] = cell
            log(f"{name} {guide}: {cell['ratio']:.2f}x")
    return results


def to_markdown(results: dict, config: dict) -> str:
    lines = [
        "# The loops users have",
        "",
        f"{config['rows']} rows, batches of {config['batch']}, {config['epochs']} "
        "epochs, 1 thread. Cells: ours / Pyro's wall time (recording included), "
        "seconds (Pyro, ours), final loss (Pyro, ours).",
        "",
        "| loop | guide | ratio | seconds | final loss | engine |",
        "|---|---|---|---|---|---|",
    ]
    for name, cells in results.items():
        for guide, c in cells.items():
            p, o = c["pyro"], c["ours"]
            rec = f", {o['recordings']} recordings" if "recordings" in o else ""
            lines.append(
                f"| {name} | {guide} | {c['ratio']:.2f}x | {p['seconds']:.2f} / "
                f"{o['seconds']:.2f} | {p['loss']:.1f} / {o['loss']:.1f} | "
                f"{o['engine']}{rec} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: run, write ``loops.md`` and ``loops.json``, print the table."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.loops")
    p.add_argument("--loops", default=",".join(LOOPS))
    p.add_argument("--guides", default=",".join(GUIDES))
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    config = {k: getattr(args, k) for k in ("rows", "epochs", "batch")}
    loops, guides = args.loops.split(","), args.guides.split(",")
    results = run(loops, guides, args.rows, args.epochs, args.batch)
    text = to_markdown(results, config)
    report = {"config": config, "results": results}
    return write_section(args.out, "loops", text, report)


if __name__ == "__main__":
    main()
