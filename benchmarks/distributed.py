"""Data-parallel scaling of ``guide_core.fit``: ms per step on 1 and 2 processes.

The model is a logistic regression on ``--rows`` rows (default a million) of
``--features`` features, subsampled by ``pyro.plate(..., subsample_size=B)``
with a fixed global subsample ``B`` (``--batch``), fitted with ``auto_normal``
under one engine (``--engine``, default recorded). Each size is a fresh set of
processes on localhost (gloo, one torch thread each, the ``torchrun``
environment); every rank builds the same data. Reported per row:

- ``plain``: one process, not distributed (Pyro's plate draws its subsample
  from a permutation of every row, each step);
- ``1 process`` / ``2 processes``: ``fit(distributed=True)`` on that many
  ranks: ms per step, the speed-up over 1 process, the share of the step spent
  in the all-reduce (waiting for the slower rank included), and the same
  all-reduce timed alone after the fit (the pure communication).

Ratios from one run on one machine; nothing asserts on them. Run::

    python -m benchmarks.distributed --out benchmarks/results [--quick]

It writes ``DIR/distributed.md`` and ``DIR/distributed.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["DistConfig", "main", "run", "to_markdown"]

ROOT = Path(__file__).resolve().parents[1]
_TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_REPEATS = 50  # all-reduces timed alone


@dataclass(frozen=True)
class DistConfig:
    """Settings of one run (``quick``: tiny sizes, for the smoke test)."""

    rows: int = 1_000_000
    features: int = 10
    batch: int = 10_000
    steps: int = 100
    warmup: int = 10
    engine: str = "recorded"
    timeout: float = 900.0
    worlds: tuple[int, ...] = (0, 1, 2)  # 0: the plain fit

    @classmethod
    def quick(cls) -> DistConfig:
        """Small sizes: seconds, not minutes."""
        return cls(rows=20_000, features=5, batch=200, steps=10, warmup=3, timeout=180)


def _logistic(x, y, batch: int) -> None:  # noqa: ANN001 - tensors
    import pyro
    import pyro.distributions as dist

    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    with pyro.plate("data", x.shape[0], subsample_size=batch) as idx:
        pyro.sample("y", dist.Bernoulli(logits=x[idx] @ w + b), obs=y[idx])


def _worker(config: DistConfig, distributed: bool, out: Path) -> None:
    """One rank: fit (warm-up, then timed) and write rank 0's figures."""
    import functools

    import pyro
    import torch
    import torch.distributed as dist
    from pyro.infer import SVI, Trace_ELBO

    import guide_core
    from guide_core.workflow.engines import Settings, make_trainer
    from guide_core.workflow.engines.process_group import join

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(config.rows, config.features, generator=g)
    truth = torch.linspace(-1.0, 1.0, config.features)
    y = torch.bernoulli(torch.sigmoid(x @ truth), generator=g)
    model = functools.partial(_logistic, batch=config.batch)
    guide = guide_core.registry.make("auto_normal", model)
    # the trainer fit uses, stepped here so that only warm steps are timed
    pyro.set_rng_seed(0)
    group = join(True) if distributed else None
    elbo = Trace_ELBO()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), elbo)
    total = config.warmup + config.steps
    settings = Settings(steps=total)
    trainer = make_trainer(config.engine, svi, elbo, settings, group=group)
    for number in range(1, config.warmup + 1):  # set-up, recording, checks
        trainer.step(number, (x, y), {})
    reduced = group.reduce_seconds if group else 0.0
    start = time.perf_counter()
    for number in range(config.warmup + 1, total + 1):
        trainer.step(number, (x, y), {})
    seconds = time.perf_counter() - start
    reduced = (group.reduce_seconds if group else 0.0) - reduced
    alone_ms = 0.0
    if distributed:
        size = sum(p.numel() for _, p in pyro.get_param_store().named_parameters())
        flat = torch.zeros(size + dist.get_world_size() + 1)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(_REPEATS):
            dist.all_reduce(flat)
        alone_ms = 1000.0 * (time.perf_counter() - start) / _REPEATS
    if not distributed or dist.get_rank() == 0:
        figures = {
            "ms_per_step": 1000.0 * seconds / config.steps,
            "reduce_ms": 1000.0 * reduced / config.steps,
            "alone_ms": alone_ms,
            "engine": trainer.engine,
            "reason": trainer.reason,
        }
        out.write_text(json.dumps(figures))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(config: DistConfig, world: int, out: Path) -> dict:
    """Run ``world`` ranks (0: one plain process); return rank 0's figures."""
    env = {k: v for k, v in os.environ.items() if k not in _TORCHRUN}
    paths = [str(ROOT), str(ROOT / "plugins"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, __file__, "--worker", str(out)]  # not the package
    cmd += ["--config", json.dumps(asdict(config))]
    if world == 0:
        cmd.append("--plain")
    port, procs = str(_free_port()), []
    for rank in range(max(world, 1)):
        rank_env = dict(env)
        if world:
            rank_env.update(RANK=str(rank), LOCAL_RANK=str(rank))
            rank_env.update(WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1")
            rank_env["MASTER_PORT"] = port
        procs.append(
            subprocess.Popen(
                cmd, env=rank_env, cwd=ROOT, stderr=subprocess.PIPE, text=True
            )
        )
    deadline = time.monotonic() + config.timeout
    try:
        for rank, proc in enumerate(procs):
            _, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if proc.returncode:
                raise RuntimeError(f"rank {rank} of {world} failed:\n{stderr[-2000:]}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return json.loads(out.read_text())


def run(config: DistConfig) -> dict:
    """Time the plain fit and 1 and 2 processes; return the figures."""
    labels = {0: "plain", 1: "1 process"}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for world in sorted(config.worlds):
            label = labels.get(world, f"{world} processes")
            rows[label] = _launch(config, world, Path(tmp) / f"{world}.json")
    one = rows["1 process"]["ms_per_step"] if "1 process" in rows else math.nan
    for figures in rows.values():
        figures["speedup"] = one / figures["ms_per_step"]
        figures["reduce_share"] = figures["reduce_ms"] / figures["ms_per_step"]
        figures["alone_share"] = figures["alone_ms"] / figures["ms_per_step"]
    return {"config": asdict(config), "cpus": os.cpu_count(), "rows": rows}


def to_markdown(report: dict) -> str:
    """The figures as a markdown table, with what was run."""
    c = report["config"]
    out = [
        f"# Distributed fit: logistic regression, {c['rows']:,} rows x "
        f"{c['features']} features, global subsample {c['batch']:,}",
        "",
        f"{c['steps']} timed steps after {c['warmup']}, engine {c['engine']}, "
        f"{report['cpus']} CPUs, one torch thread per process, gloo on localhost.",
        "",
        "| run | engine | ms/step | speed-up vs 1 process | in all-reduce "
        "| all-reduce alone |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, f in report["rows"].items():
        share = f"{f['reduce_ms']:.2f} ms ({100 * f['reduce_share']:.1f}%)"
        alone = f"{f['alone_ms']:.3f} ms ({100 * f['alone_share']:.1f}%)"
        if label == "plain":
            share = alone = "-"
        out.append(
            f"| {label} | {f['engine']} | {f['ms_per_step']:.2f} | "
            f"{f['speedup']:.2f}x | {share} | {alone} |"
        )
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or one rank of it, ``--worker``); print the table."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.distributed")
    p.add_argument("--rows", type=int, help="rows of the data (default 1e6)")
    p.add_argument("--batch", type=int, help="global subsample size (default 1e4)")
    p.add_argument("--steps", type=int, help="timed steps (default 100)")
    p.add_argument("--engine", help="eager, recorded or compiled (default recorded)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, few steps")
    p.add_argument("--out", default="benchmarks/results", help="output directory")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        given = json.loads(args.config)
        config = DistConfig(**{**given, "worlds": tuple(given["worlds"])})
        _worker(config, distributed=not args.plain, out=Path(args.worker))
        return 0
    config = DistConfig.quick() if args.quick else DistConfig()
    changes = {"rows": args.rows, "batch": args.batch, "steps": args.steps}
    changes["engine"] = args.engine
    config = DistConfig(
        **{**asdict(config), **{k: v for k, v in changes.items() if v is not None}}
    )
    report = run(config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "distributed.json").write_text(json.dumps(report, indent=2))
    text = to_markdown(report)
    (out / "distributed.md").write_text(text)
    print(text, end="")
    print(f"\nwrote {out / 'distributed.md'} and {out / 'distributed.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
