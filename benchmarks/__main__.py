"""Command line: ``python -m benchmarks [--quick] [--guides a,b] [--backend B]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .harness import BenchConfig, run_benchmarks
from .models import MODEL_NAMES
from .report import to_markdown, write_reports


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m benchmarks``."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time guide_core's guides against pyro.infer.autoguide's "
        "on a fixed model suite; write DIR/bench.md and DIR/bench.json.",
    )
    p.add_argument("--guides", type=_names, help="registry names, comma separated")
    models = ",".join(MODEL_NAMES)
    p.add_argument("--models", type=_names, help=f"comma separated: {models}")
    p.add_argument("--steps", type=int, help="timed steps per side per round")
    p.add_argument("--rounds", type=int, help="alternating rounds")
    p.add_argument("--warmup", type=int, help="untimed steps per side first")
    p.add_argument("--floor-repeats", type=int, help="timed model-only repeats")
    p.add_argument("--quick", action="store_true", help="tiny sizes, few steps")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed shared by both sides")
    p.add_argument("--validate", action="store_true", help="keep Pyro's validation on")
    p.add_argument("--backend", help="backend= of guides that take one (auto_gaussian)")
    p.add_argument(
        "--engines",
        type=_names,
        default=(),
        help="guide_core.fit engines to time our guides under too, comma "
        "separated: recorded,compiled (extra columns); pyro_jit adds Pyro's guide "
        "under JitTrace_ELBO",
    )
    p.add_argument("--out", default="benchmarks/results", help="output directory")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the markdown table; return the exit status."""
    args = build_parser().parse_args(argv)
    config = BenchConfig(
        guides=args.guides,
        models=args.models,
        steps=args.steps,
        rounds=args.rounds,
        warmup=args.warmup,
        floor_repeats=args.floor_repeats,
        quick=args.quick,
        threads=args.threads,
        seed=args.seed,
        validate=args.validate,
        backend=args.backend,
        engines=args.engines,
    )
    try:
        result = run_benchmarks(config)
    except Exception as exc:  # noqa: BLE001 - bad names, broken registry
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return 2
    md_path, json_path = write_reports(result, args.out)
    print(to_markdown(result), end="")
    print(f"\nwrote {md_path} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
