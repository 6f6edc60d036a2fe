"""Amortized against per-row guides: ``python -m benchmarks.amortized``.

The model: ``--rows`` (100,000) rows, each with a ``--latent`` (10)
dimensional local latent ``z_i ~ N(0, I)`` and ``y_i = W z_i + noise``
(``W`` fixed, 20 observed values per row), fitted in mini-batches of
``--batch`` (1,000) rows from a shuffled ``DataLoader`` for ``--epochs`` (5)
epochs through ``guide_core.SVI``, the plate's size the whole data. Each
guide runs from the same seed on the same batches:

- ``AutoNormal``: a ``loc`` and a ``scale`` per row and latent value;
- ``AutoAmortizedNormal``: the default MLP encoder (one hidden layer of 64)
  of each row's ``y``.

Reported: the parameters' memory (bytes in the param store), the time per
epoch, and the ELBO per row at the end (the mean over 20 fixed batches of
``-loss / rows``, 10 particles each) next to the exact log evidence per row
(``y_i ~ N(0, W W^T + sigma^2 I)``, the most any ELBO can reach), with ours /
AutoNormal's ratios.
Targets (issue 27): memory at most 0.05x, time per epoch at most 1x, the
final ELBO per row within 2%.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from torch.utils.data import DataLoader, TensorDataset

import guide_core

from .report import write_section

__all__ = ["GUIDES", "main", "run"]

OBSERVED, SIGMA = 20, 0.5
GUIDES = ("AutoNormal", "AutoAmortizedNormal")


def _problem(rows: int, latent: int):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(OBSERVED, latent, generator=g) / latent**0.5
    y = torch.randn(rows, latent, generator=g) @ w.T
    y = y + SIGMA * torch.randn(rows, OBSERVED, generator=g)

    def evidence(batch):
        """The exact log p(y) of each row: y ~ N(0, W W^T + sigma^2 I)."""
        cov = w @ w.T + SIGMA**2 * torch.eye(OBSERVED)
        return dist.MultivariateNormal(torch.zeros(OBSERVED), cov).log_prob(batch)

    def model(batch, size):
        with pyro.plate("data", size, subsample_size=batch.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(latent), 1.0).to_event(1))
            pyro.sample("y", dist.Normal(z @ w.T, SIGMA).to_event(1), obs=batch)

    model.evidence = evidence
    return y, model


def _guide(name: str, model):
    if name == "AutoNormal":
        return guide_core.AutoNormal(model)
    return guide_core.AutoAmortizedNormal(
        model, amortized_plates="data", encoder_input="batch"
    )


def _side(name: str, rows: int, latent: int, batch: int, epochs: int) -> dict:
    y, model = _problem(rows, latent)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(y), batch_size=batch, shuffle=True)
    guide = _guide(name, model)
    svi = guide_core.SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for (b,) in loader:
            svi.step(b, rows)
        seconds.append(time.perf_counter() - start)
    store = pyro.get_param_store()
    memory = sum(p.numel() * p.element_size() for _, p in store.named_parameters())
    g = torch.Generator().manual_seed(1)
    elbo = Trace_ELBO(num_particles=10, vectorize_particles=True)
    losses, exact = [], []
    with torch.no_grad():
        for _ in range(20):
            idx = torch.randperm(rows, generator=g)[:batch]
            losses.append(float(elbo.loss(model, guide, y[idx], rows)) / rows)
            exact.append(float(model.evidence(y[idx]).mean()))
    return {
        "param_bytes": memory,
        "epoch_seconds": seconds,
        "epoch_s": min(seconds),
        "elbo_per_row": -sum(losses) / len(losses),
        "log_evidence_per_row": sum(exact) / len(exact),
        "engine": svi.engine,
    }


def run(rows: int, latent: int, batch: int, epochs: int, log=print) -> dict:
    """Both sides and ours / AutoNormal's ratios."""
    torch.set_num_threads(1)
    out = {name: _side(name, rows, latent, batch, epochs) for name in GUIDES}
    ours, theirs = out["AutoAmortizedNormal"], out["AutoNormal"]
    out["ratios"] = {
        "memory": ours["param_bytes"] / theirs["param_bytes"],
        "epoch_time": ours["epoch_s"] / theirs["epoch_s"],
        "elbo_gap": (ours["elbo_per_row"] - theirs["elbo_per_row"])
        / abs(theirs["elbo_per_row"]),
    }
    log(json.dumps(out["ratios"]))
    return out


def to_markdown(results: dict, config: dict) -> str:
    lines = [
        "# Amortized against per-row parameters",
        "",
        f"{config['rows']} rows, a {config['latent']}-dimensional latent per row, "
        f"batches of {config['batch']}, {config['epochs']} epochs, 1 thread.",
        "",
        "| guide | param MiB | s per epoch (best) | ELBO per row | exact log p(y) "
        "per row | engine |",
        "|---|---|---|---|---|---|",
    ]
    for name in GUIDES:
        r = results[name]
        lines.append(
            f"| {name} | {r['param_bytes'] / 2**20:.3f} | {r['epoch_s']:.2f} | "
            f"{r['elbo_per_row']:.3f} | {r['log_evidence_per_row']:.3f} | "
            f"{r['engine']} |"
        )
    q = results["ratios"]
    lines += [
        "",
        f"Ratios, ours / AutoNormal's: memory {q['memory']:.4f}x, time per epoch "
        f"{q['epoch_time']:.2f}x; final ELBO per row {q['elbo_gap']:+.1%} "
        "(positive: ours is higher).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: run, write ``amortized.md`` and ``.json``, print the table."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.amortized")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--latent", type=int, default=10)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    config = {k: getattr(args, k) for k in ("rows", "latent", "batch", "epochs")}
    results = run(**config)
    text = to_markdown(results, config)
    report = {"config": config, "results": results}
    return write_section(args.out, "amortized", text, report)


if __name__ == "__main__":
    main()
