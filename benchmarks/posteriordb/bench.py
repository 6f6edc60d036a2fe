"""Accuracy on posteriordb posteriors: ``python -m benchmarks.posteriordb``.

Each posterior x method cell fits the posterior, draws ``--draws`` constrained
draws of every Stan parameter and compares them with the reference draws:
``mean_err`` (max over scalar components of ``|mean - ref mean| / ref sd``),
``sd_ratio_min``/``sd_ratio_max`` (of ``sd / ref sd``), ``w1`` (mean over
components of the 1-D Wasserstein distance to the reference, over ``ref sd``),
``grads`` (gradient evaluations) and ``seconds`` (wall time of the fit only).

Methods: ``pyro_normal``/``pyro_mvn`` follow Pyro's recipe (its
``AutoNormal``/``AutoMultivariateNormal``, ``Adam(lr=0.01)``, ``Trace_ELBO``,
3,000 steps). Pyro's default initializers sample the prior, which an
``ImproperUniform`` (Stan's flat prior) cannot, so Pyro's guides get
``init_loc_fn=guide_core.init_to_feasible`` (the same strategy as Pyro's
``init_to_feasible``, but it also handles improper priors). ``fit_*`` run
``guide_core.fit`` with its defaults; ``pathfinder_*`` build
``auto_pathfinder`` and fit it by ``guide_core.fit`` too (it runs Pathfinder).

Draws come from the guide itself, one call per draw: ``pyro.infer.Predictive``
runs the model once under ``init_to_sample`` to find its plates, which fails on
flat priors.

Everything runs in float64: some posteriors have sds of 1e-3 around 1.0 and
correlations of -0.99999, which float32 cannot resolve (round-off of the
order of the sd, singular covariances).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from scipy import stats

import guide_core
from guide_core import registry

from ..report import json_safe
from . import SHORT_NAMES, load

__all__ = ["METHODS", "main", "mean_error", "metrics", "run", "sd_ratios", "w1"]

PYRO_STEPS = 3000


# -- metrics: pure functions of (draws, components) arrays --------------------


def mean_error(draws: np.ndarray, ref: np.ndarray) -> float:
    """Max over components of ``|mean - ref mean| / ref sd``.

    Parameters
    ----------
    draws, ref : numpy.ndarray
        Draws shaped ``(n, k)`` and ``(m, k)``: ``k`` scalar components.
    """
    return float(np.max(np.abs(draws.mean(0) - ref.mean(0)) / ref.std(0, ddof=1)))


def sd_ratios(draws: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Min and max over components of ``sd / ref sd`` (arrays as in
    :func:`mean_error`)."""
    ratio = draws.std(0, ddof=1) / ref.std(0, ddof=1)
    return float(ratio.min()), float(ratio.max())


def w1(draws: np.ndarray, ref: np.ndarray) -> float:
    """Mean over components of the 1-D Wasserstein distance to ``ref``, each
    over its ref sd (arrays as in :func:`mean_error`)."""
    sd = ref.std(0, ddof=1)
    dist = [stats.wasserstein_distance(draws[:, j], ref[:, j]) for j in range(len(sd))]
    return float(np.mean(np.asarray(dist) / sd))


def flatten(draws: dict[str, np.ndarray], sites: Sequence[str]) -> np.ndarray:
    """Stack the ``sites`` of ``draws`` (each ``(n, *shape)``) into ``(n, k)``."""
    return np.concatenate([np.reshape(draws[s], (len(draws[s]), -1)) for s in sites], 1)


def metrics(draws: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict:
    """``mean_err``, ``sd_ratio_min``, ``sd_ratio_max`` and ``w1`` of ``draws``
    against ``reference`` (dicts of site -> ``(n, *site_shape)`` arrays)."""
    sites = list(reference)
    ours, ref = flatten(draws, sites), flatten(reference, sites)
    low, high = sd_ratios(ours, ref)
    return {
        "mean_err": mean_error(ours, ref),
        "sd_ratio_min": low,
        "sd_ratio_max": high,
        "w1": w1(ours, ref),
    }


# -- fitting -------------------------------------------------------------------


def _fit_pyro(guide_class: type) -> Callable:
    def fit_pyro(model: Callable, data: dict) -> tuple[Any, int]:
        guide = guide_class(model, init_loc_fn=guide_core.init_to_feasible)
        optim = pyro.optim.Adam({"lr": 0.01})
        svi = pyro.infer.SVI(model, guide, optim, pyro.infer.Trace_ELBO())
        for _ in range(PYRO_STEPS):
            svi.step(**data)
        return guide, PYRO_STEPS

    return fit_pyro


def _fit_ours(name: str, options: dict) -> Callable:
    def fit_ours(model: Callable, data: dict) -> tuple[Any, int]:
        guide = registry.make(name, model, **options)
        result = guide_core.fit(model, guide, progress=False, khat=False, **data)
        return guide, int(getattr(result, "gradient_evaluations", result.steps))

    return fit_ours


FITTERS: dict[str, Callable] = {
    "pyro_normal": _fit_pyro(pyro.infer.autoguide.AutoNormal),
    "pyro_mvn": _fit_pyro(pyro.infer.autoguide.AutoMultivariateNormal),
    "fit_normal": _fit_ours("auto_normal", {}),
    "fit_mvn": _fit_ours("auto_multivariate_normal", {}),
    "fit_lowrank": _fit_ours("auto_low_rank_multivariate_normal", {}),
    "fit_auto": _fit_ours("auto", {}),
    "pathfinder_1": _fit_ours("auto_pathfinder", {"num_paths": 1}),
    "pathfinder_4": _fit_ours("auto_pathfinder", {"num_paths": 4}),
}
#: Method names, as table columns.
METHODS = tuple(FITTERS)


def draw(guide: Callable, data: dict, sites: Sequence[str], n: int) -> dict:
    """``n`` draws of ``sites`` from ``guide``, as ``(n, *shape)`` arrays."""
    with torch.no_grad():
        calls = [guide(**data) for _ in range(n)]
    return {s: np.stack([c[s].detach().cpu().numpy() for c in calls]) for s in sites}


def run_cell(post: Any, method: str, seed: int, draws: int) -> dict:
    """Fit ``post`` by ``method`` and score its draws; an error becomes
    ``{"error": "<Type>: <message>"}``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    try:
        start = time.perf_counter()
        guide, grads = FITTERS[method](post.model, post.data)
        seconds = time.perf_counter() - start
        sample = draw(guide, post.data, list(post.reference), draws)
        return {**metrics(sample, post.reference), "grads": grads, "seconds": seconds}
    except Exception as e:  # noqa: BLE001 - a cell's failure is a result
        message = " ".join(str(e).split())[:80]
        return {"error": f"{type(e).__name__}: {message}"}


def run(
    posteriors: Sequence[str] = SHORT_NAMES,
    methods: Sequence[str] = METHODS,
    seed: int = 0,
    draws: int = 1000,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run every posterior x method cell, in float64; ``log`` gets a line a cell.

    Returns
    -------
    dict
        ``{short: {"name", "exclude", "note", "cells": {method: cell}}}``; a
        posterior whose module or data is missing has a ``note`` and no cells.
    """
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    results: dict[str, dict] = {}
    try:
        for short in posteriors:
            try:
                post = load(short)
            except Exception as e:  # noqa: BLE001 - a module in progress, say
                note = f"skipped: {type(e).__name__}: {str(e)[:80]}"
                results[short] = {"name": short, "exclude": None, "note": note}
                results[short]["cells"] = {}
                continue
            cells = {}
            for m in methods:
                cells[m] = run_cell(post, m, seed, draws)
                if log is not None:
                    log(f"{short} {m}: {cell_text(cells[m])}")
            results[short] = {"name": post.name, "exclude": post.exclude}
            results[short].update(note=None, cells=cells)
    finally:
        torch.set_default_dtype(old)
    return results


# -- targets and report --------------------------------------------------------


def _verdict(entry: dict, method: str, check: Callable[[dict], bool]) -> str:
    cell = entry["cells"].get(method)
    if cell is None:
        return f"{method} not run"
    if "error" in cell:
        return f"{method} FAIL (error)"
    return f"{method} {_pf(check(cell))}"


def _mvn_ok(cell: dict) -> bool:
    within = 0.8 <= cell["sd_ratio_min"] and cell["sd_ratio_max"] <= 1.25
    return cell["mean_err"] <= 0.25 and within


def _pf(flag: bool) -> str:
    return "pass" if flag else "FAIL"


def targets(results: dict) -> dict:
    """Check the issue's targets on the results of :func:`run`.

    (a) per posterior not excluded: fit_mvn ``mean_err <= 0.25`` and sd ratios
    in [0.8, 1.25]; fit_normal ``mean_err <= 0.25``. (b) pathfinder_4's ``w1``
    <= pyro_normal's on at least 80% of the posteriors where both ran, with
    at most 1/10 of its gradients. (c) per posterior, the fit_* methods not
    faster than pyro_normal (an error counts as not faster).
    """
    a, b_rows, c = {}, {}, {}
    for short, entry in results.items():
        cells = entry["cells"]
        if entry["note"] or entry["exclude"]:
            a[short] = f"excluded: {entry['note'] or entry['exclude']}"
        else:
            mvn = _verdict(entry, "fit_mvn", _mvn_ok)
            normal = _verdict(entry, "fit_normal", lambda x: x["mean_err"] <= 0.25)
            a[short] = f"{mvn}, {normal}"
        base = cells.get("pyro_normal", {})
        if "seconds" not in base:
            continue
        pf4 = cells.get("pathfinder_4", {})
        if "w1" in pf4:
            b_rows[short] = (
                pf4["w1"] <= base["w1"],
                10 * pf4["grads"] <= base["grads"],
            )
        fits = [m for m in cells if m.startswith("fit_")]
        if fits:
            c[short] = [
                m
                for m in fits
                if not cells[m].get("seconds", math.inf) < base["seconds"]
            ]
    share = sum(w for w, _ in b_rows.values()) / len(b_rows) if b_rows else None
    grads_ok = all(g for _, g in b_rows.values())
    b = {"posteriors": len(b_rows), "share_w1": share, "grads_ok": grads_ok}
    b["pass"] = share is not None and share >= 0.8 and grads_ok
    b["misses"] = {
        short: [what for what, ok in zip(("w1", "grads"), row) if not ok]
        for short, row in b_rows.items()
        if not all(row)
    }
    return {"a": a, "b": b, "c": c}


def cell_text(cell: dict | None) -> str:
    """``mean_err / sd_min-sd_max / w1 / grads / seconds``, or the error."""
    if cell is None:
        return ""
    if "error" in cell:
        return f"error: {cell['error']}".replace("|", "\\|")
    sd = f"{cell['sd_ratio_min']:.2f}-{cell['sd_ratio_max']:.2f}"
    return (
        f"{cell['mean_err']:.2f} / {sd} / {cell['w1']:.2f} / {cell['grads']}"
        f" / {cell['seconds']:.1f}s"
    )


def to_markdown(results: dict, config: dict) -> str:
    """The table, its legend and the targets' check, as markdown."""
    methods = list(config["methods"])
    lines = [
        "# Accuracy on posteriordb posteriors",
        "",
        f"seed {config['seed']}, {config['draws']} draws, float64. Cells: "
        "mean_err (max |mean - ref| / ref sd) / sd ratio min-max (sd / ref sd) / "
        "w1 (mean 1-D Wasserstein over ref sd) / gradient evaluations / fit seconds.",
        "",
        "| posterior | " + " | ".join(methods) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    for short, entry in results.items():
        if entry["note"]:
            lines.append(f"| {short} | {entry['note']} |" + " |" * (len(methods) - 1))
            continue
        cells = [cell_text(entry["cells"].get(m)) for m in methods]
        lines.append(f"| {short} | " + " | ".join(cells) + " |")
    check = targets(results)
    lines += ["", "## Targets", "", "(a) fit defaults: fit_mvn mean_err <= 0.25 "]
    lines[-1] += "and sd ratios in [0.8, 1.25]; fit_normal mean_err <= 0.25"
    lines += [""] + [f"- {short}: {text}" for short, text in check["a"].items()]
    b = check["b"]
    lines += ["", "(b) pathfinder_4 w1 <= pyro_normal w1 on >= 80% of posteriors, "]
    if b["share_w1"] is None:
        lines[-1] += "with <= 1/10 of its gradients: not run"
    else:
        lines[-1] += (
            f"with <= 1/10 of its gradients: {b['share_w1']:.0%} of "
            f"{b['posteriors']}, gradients {'ok' if b['grads_ok'] else 'not ok'}: "
            f"{_pf(b['pass'])}"
        )
        misses = b["misses"].items()
        lines += [f"- {short}: {' and '.join(m)} missed" for short, m in misses]
    c = check["c"]
    lines += ["", "(c) every fit_* faster than pyro_normal: "]
    lines[-1] += _pf(not any(c.values())) if c else "not run"
    lines += [f"- {short}: not faster: {', '.join(m)}" for short, m in c.items() if m]
    return "\n".join(lines) + "\n"


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: run, write ``bench.md`` and ``bench.json``, print the markdown."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.posteriordb", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--posteriors",
        type=_names,
        default=list(SHORT_NAMES),
        help=f"comma separated; default all: {','.join(SHORT_NAMES)}",
    )
    p.add_argument(
        "--methods",
        type=_names,
        default=list(METHODS),
        help=f"comma separated; default all: {','.join(METHODS)}",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=1000, help="draws per cell")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/posteriordb"))
    args = p.parse_args(argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    config = dict(seed=args.seed, draws=args.draws, methods=args.methods)
    config.update(torch=torch.__version__, pyro=pyro.__version__)
    log = functools.partial(print, file=sys.stderr, flush=True)
    results = run(args.posteriors, args.methods, args.seed, args.draws, log)
    text = to_markdown(results, config)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.md").write_text(text)
    report = {"config": config, "results": results, "targets": targets(results)}
    (args.out / "bench.json").write_text(json.dumps(json_safe(report), indent=1))
    print(text)
    return report
