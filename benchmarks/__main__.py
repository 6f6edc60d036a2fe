"""Command line: ``python -m benchmarks [--quick] [--guides a,b] [--backend B]``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence

from .end_to_end import E2E_GUIDES
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
    p.add_argument(
        "--memory",
        action="store_true",
        help="also measure each side's peak memory (a fresh process per side)",
    )
    p.add_argument(
        "--numpyro",
        action="store_true",
        help="also time NumPyro's jitted step of the same guide (if installed)",
    )
    p.add_argument(
        "--end-to-end",
        action="store_true",
        help="also time whole fits: guide_core.fit(engine='auto') vs Pyro's SVI loop",
    )
    p.add_argument("--e2e-steps", type=int, help="steps of an end-to-end fit (2000)")
    p.add_argument(
        "--e2e-guides",
        type=_names,
        default=E2E_GUIDES,
        help=f"guides fitted end to end (default {','.join(E2E_GUIDES)})",
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
        memory=args.memory,
        numpyro=args.numpyro,
        end_to_end=args.end_to_end,
        e2e_steps=args.e2e_steps,
        e2e_guides=args.e2e_guides,
    )
    # Inductor's cache may hold kernels built on another machine (a 2 ms
    # step where a fresh compile gives 0.3 ms): the compiled column starts
    # from an empty cache, as the fresh-process probes do.
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="bench-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            result = run_benchmarks(config)
        except Exception as exc:  # noqa: BLE001 - bad names, broken registry
            print(f"benchmarks: error: {exc}", file=sys.stderr)
            return 2
        finally:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR")
            if before is not None:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = before
    md_path, json_path = write_reports(result, args.out)
    print(to_markdown(result), end="")
    print(f"\nwrote {md_path} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
