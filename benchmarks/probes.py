"""Measurements that need a fresh process: memory, NumPyro, end-to-end fits.

Each probe runs ``python -m benchmarks.child REQUEST`` (see
:mod:`benchmarks.child`) with the parent's ``sys.path``, so the child imports
the same code; it prints one JSON line back. A fresh process per probe means a
side's memory is its own, JAX's threads are set before JAX starts, and every
``torch.compile`` starts from an empty inductor cache (a user's first fit).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["cell_memory", "cell_numpyro", "numpyro_missing", "run_child"]

ROOT = Path(__file__).resolve().parents[1]
# One XLA CPU thread, as torch gets --threads (default 1) in the parent.
_XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def numpyro_missing() -> str | None:
    """Why NumPyro cannot be timed here, or None when it can."""
    for name in ("numpyro", "jax"):
        if importlib.util.find_spec(name) is None:
            return f"{name} is not installed (pip install -e '.[bench]')"
    return None


def _env(threads: int | None, cache_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    env["JAX_PLATFORMS"] = "cpu"
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + _XLA_ONE_THREAD).strip()
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if torch.get_default_dtype() == torch.float64:
        env["JAX_ENABLE_X64"] = "1"
    return env


def run_child(request: dict[str, Any], timeout: float = 1800.0) -> dict[str, Any]:
    """Run one probe in a fresh process; return its JSON answer.

    A probe that fails, times out or prints no answer returns
    ``{"error": "..."}`` instead of raising.
    """
    request = {"dtype": str(torch.get_default_dtype()), **request}
    with tempfile.TemporaryDirectory(prefix="bench-inductor-") as cache:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.child", json.dumps(request)],
                cwd=ROOT,
                env=_env(request.get("threads"), cache),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"probe timed out after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
    return {"error": f"probe failed: {tail[0]}"}


def _request(cell: Any, cfg: Any, kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "guide": cell.guide,
        "class_name": cell.class_name,
        "backend": cell.backend,
        "model": cell.model,
        "quick": cfg.quick,
        "seed": cfg.seed,
        "lr": cfg.lr,
        "warmup": cfg.warmup,
        "steps": cfg.steps * cfg.rounds,
        "threads": cfg.threads,
        "validate": cfg.validate,
        **extra,
    }


def cell_memory(cell: Any, cfg: Any) -> dict[str, dict[str, Any]]:
    """Peak memory of every side of a cell that ran, one fresh process each."""
    sides = ["ours"] if cell.ours.error is None else []
    if cell.pyro_missing is None and cell.pyro.error is None:
        sides.append("pyro")
    sides += [e for e, side in cell.engines.items() if side.error is None]
    return {side: run_child(_request(cell, cfg, "side", side=side)) for side in sides}


def cell_numpyro(cell: Any, cfg: Any) -> dict[str, Any] | None:
    """NumPyro's jitted step for a cell's guide class; None if NumPyro lacks it."""
    from .numpyro_side import has_guide

    if not has_guide(cell.class_name):
        return None
    return run_child(_request(cell, cfg, "numpyro"))
