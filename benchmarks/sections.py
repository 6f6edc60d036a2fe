"""The markdown sections after the main table: guides Pyro lacks, memory, the
batched-vs-dense comparison, end-to-end fits, and the NumPyro column's cells.

Every function takes the JSON-ready dict of :func:`benchmarks.report.to_json`
and returns lines (empty when its part was not measured).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "batched_table",
    "cell_text",
    "end_to_end_table",
    "loss",
    "memory_table",
    "ms",
    "no_pyro_table",
    "notes",
    "numpyro_cells",
    "numpyro_header",
    "ratio",
]

_WIDTH = 100
DENSE = "auto_multivariate_normal"
BATCHED = (
    "auto_batched_multivariate_normal",
    "auto_batched_low_rank_multivariate_normal",
)


def ms(x: float | None) -> str:
    """Milliseconds (or seconds, MiB) with three significant digits."""
    if x is None:
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}" if x >= 1 else f"{x:.3f}"


def ratio(x: float | None) -> str:
    """A ratio with two decimals."""
    return "-" if x is None else f"{x:.2f}"


def loss(x: float | None) -> str:
    """A loss with six significant digits."""
    return "-" if x is None else f"{x:.6g}"


def cell_text(text: str, width: int = _WIDTH) -> str:
    """One line, pipes escaped, cut to ``width`` characters."""
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def _over(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den <= 0 else num / den


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(columns) - 2)) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _guide(cell: dict[str, Any]) -> str:
    return (
        f"{cell['guide']} ({cell['backend']})" if cell.get("backend") else cell["guide"]
    )


def notes(data: dict[str, Any]) -> list[str]:
    """One line per note of the run (e.g. why there is no NumPyro column)."""
    return ["", *data["notes"]] if data["notes"] else []


# -- NumPyro -------------------------------------------------------------------


def numpyro_header(data: dict[str, Any]) -> list[str]:
    """``["numpyro ms/step"]`` when some cell has NumPyro's time, else ``[]``."""
    return ["numpyro ms/step"] if any(c.get("numpyro") for c in data["cells"]) else []


def numpyro_cells(cell: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """NumPyro's ms/step and compiled(ours)/NumPyro (ours eager if no compiled)."""
    side = cell.get("numpyro")
    if not side:
        return ["-"]
    if side.get("error"):
        return [f"ERROR: {cell_text(side['error'])}"]
    compiled = cell["engines"].get("compiled") or {}
    label, ref = ("compiled", compiled.get("ms")) if compiled else ("ours", None)
    ref = cell["ours_ms"] if ref is None and not compiled else ref
    over = _over(ref, side["ms"])
    return [f"{ms(side['ms'])} ({label}/np {'-' if over is None else f'{over:.1f}x'})"]


# -- guides Pyro lacks ---------------------------------------------------------


def no_pyro_table(data: dict[str, Any], engine_cells: Callable[..., list]) -> list[str]:
    """Guides without a Pyro counterpart: step time against the model floor."""
    cells = [c for c in data["cells"] if c["pyro_missing"]]
    if not cells:
        return []
    engines = list(data["config"].get("engines") or ())
    engines = [e for e in engines if e != "pyro_jit"]
    extra = numpyro_header(data)
    columns = ["guide", "model", "ours ms/step", *(f"{e} ms/step" for e in engines)]
    columns += [*extra, "floor ms", "ours/floor", "final loss ours"]
    rows = []
    for c in cells:
        if c["not_applicable"]:
            na = f"n/a: {cell_text(c['not_applicable'], 160)}"
            rows.append([_guide(c), c["model"], na] + ["-"] * (len(columns) - 3))
            continue
        ours = (
            f"ERROR: {cell_text(c['ours_error'])}"
            if c["ours_error"]
            else ms(c["ours_ms"])
        )
        rows.append(
            [_guide(c), c["model"], ours, *engine_cells(c, engines)]
            + (numpyro_cells(c, data) if extra else [])
            + [
                ms(c["floor_ms"]),
                ratio(c["ours_over_floor"]),
                loss(c["final_loss_ours"]),
            ]
        )
    return [
        "",
        "## Guides Pyro lacks",
        "",
        "No Pyro oracle: step time against the model floor. `n/a` = the guide "
        "refused the model before its first step (its message).",
        "",
        *_table(columns, rows),
    ]


# -- memory --------------------------------------------------------------------


def _mib(side: dict[str, Any] | None) -> str:
    if not side:
        return "-"
    if side.get("error"):
        return f"ERROR: {cell_text(side['error'], 60)}"
    machinery = side.get("machinery_mib")
    text = ms(side.get("peak_mib"))
    return text if machinery is None else f"{text} (+{ms(machinery)})"


def _process_mib(side: dict[str, Any] | None) -> float | None:
    """The side's whole process at its peak: RSS before the guide plus the peak."""
    if not side or side.get("base_mib") is None or side.get("peak_mib") is None:
        return None
    return side["base_mib"] + side["peak_mib"]


def memory_table(data: dict[str, Any]) -> list[str]:
    """Peak MiB of every side (fresh process each), engines also over eager."""
    cells = [c for c in data["cells"] if c.get("memory")]
    if not cells:
        return []
    engines = list(data["config"].get("engines") or ())
    ours_engines = [e for e in engines if e != "pyro_jit"]
    columns = ["guide", "model", "ours MiB", "pyro MiB", *(f"{e} MiB" for e in engines)]
    columns += [f"{e}/ours" for e in ours_engines]
    columns += [f"{e}/ours process" for e in ours_engines]
    has_np = any(c.get("numpyro") for c in cells)
    columns += ["numpyro MiB"] if has_np else []
    rows = []
    for c in cells:
        mem = c["memory"]
        ours = (mem.get("ours") or {}).get("peak_mib")
        row = [_guide(c), c["model"], _mib(mem.get("ours")), _mib(mem.get("pyro"))]
        row += [_mib(mem.get(e)) for e in engines]
        row += [
            ratio(_over((mem.get(e) or {}).get("peak_mib"), ours)) for e in ours_engines
        ]
        whole = _process_mib(mem.get("ours"))
        row += [ratio(_over(_process_mib(mem.get(e)), whole)) for e in ours_engines]
        row += [_mib(c.get("numpyro"))] if has_np else []
        rows.append(row)
    return [
        "",
        "## Memory (peak MiB)",
        "",
        "Each side in a fresh process: peak resident set size over the timed "
        "steps (the kernel's peak reset after warm-up) minus the RSS before the "
        "guide was built (imports, data and the side's one-time machinery "
        "done). So it counts the params, the optimizer state, a recorded or "
        "compiled program and a step's temporaries; page resolution (4 KiB), "
        "allocator view (memory malloc keeps counts). `(+m)`: the one-time "
        "machinery of that side in the process (Pyro's first SVI steps, the "
        "tracer's first recording, inductor's first compile: a few steps of "
        "the same side on the quick tiny model, before the baseline), the same "
        "for every model and paid once per process. `e/ours` = that engine "
        "over our eager side, machinery apart; `e/ours process` = the same for "
        "the whole process at its peak (imports, machinery and all: what `top` "
        "shows a user).",
        "",
        *_table(columns, rows),
    ]


# -- batched vs dense ----------------------------------------------------------


def batched_table(data: dict[str, Any]) -> list[str]:
    """AutoBatched* against AutoMultivariateNormal, per model: time and memory."""
    by = {(c["guide"], c["model"]): c for c in data["cells"] if not c.get("backend")}
    # The models where a batched guide ran, and hierarchical (where they refuse).
    ran = {m for (g, m), c in by.items() if g in BATCHED and c["ours_ms"] is not None}
    models = [m for (g, m) in by if g == DENSE and (m in ran or m == "hierarchical")]
    rows = []
    for model in models:
        dense = by[(DENSE, model)]
        d_ms = dense["ours_ms"]
        d_mib = (dense.get("memory", {}).get("ours") or {}).get("peak_mib")
        rows.append([model, DENSE, ms(d_ms), "1", ms(d_mib), "1" if d_mib else "-"])
        for name in BATCHED:
            cell = by.get((name, model))
            if cell is None:
                continue
            if cell["not_applicable"] or cell["ours_error"]:
                why = cell["not_applicable"] or cell["ours_error"]
                rows.append([model, name, f"n/a: {cell_text(why, 120)}", "-", "-", "-"])
                continue
            mib = (cell.get("memory", {}).get("ours") or {}).get("peak_mib")
            rows.append(
                [model, name, ms(cell["ours_ms"]), ratio(_over(cell["ours_ms"], d_ms))]
                + [ms(mib), ratio(_over(mib, d_mib))]
            )
    if not any(row[1] in BATCHED for row in rows):
        return []
    columns = ["model", "guide", "ms/step", "vs MVN", "peak MiB", "vs MVN"]
    return [
        "",
        "## Batched Gaussians vs AutoMultivariateNormal (target <= 0.1x each)",
        "",
        "Our guides, `SVI.step`. The batched guides need every latent site in "
        "the batch plate; on `hierarchical` the globals `loc`/`scale` are outside "
        "it, so they do not apply there (n/a) and `grouped` (a plate of "
        "correlated local vectors, no globals) is the model where they do.",
        "",
        *_table(columns, rows),
    ]


# -- end to end ----------------------------------------------------------------


def _side_s(side: dict[str, Any], key: str = "seconds") -> str:
    if side.get("error"):
        return f"ERROR: {cell_text(side['error'], 60)}"
    return ms(side.get(key))


def _final(side: dict[str, Any]) -> str:
    if side.get("error") or side.get("final_loss") is None:
        return "-"
    return f"{loss(side['final_loss'])} ± {side['final_sd']:.3g}"


def end_to_end_table(data: dict[str, Any]) -> list[str]:
    """2,000-step fits and time to convergence: ours (auto) vs Pyro's SVI loop."""
    rows_in = data.get("end_to_end") or []
    if not rows_in:
        return []
    rows = []
    for r in rows_in:
        ours, conv, pyro = r["ours"], r["ours_conv"], r["pyro"]
        engine = ours.get("engine", "?")
        at = f"{conv.get('converged_at') or ours.get('converged_at') or '-'}"
        rows.append(
            [r["guide"], r["model"], f"{_side_s(ours)} ({engine})", _side_s(pyro)]
            + [ratio(_over(ours.get("seconds"), pyro.get("seconds")))]
            + [f"{at} / {pyro.get('converged_at') or '-'}"]
            + [_side_s(conv) if conv.get("converged_at") or conv.get("error") else "-"]
            + [_side_s(pyro, "conv_seconds")]
            + [ratio(_over(conv.get("seconds"), pyro.get("conv_seconds")))]
            + [_final(ours), _final(pyro)]
            + [f"{ms(ours.get('peak_mib'))} / {ms(pyro.get('peak_mib'))}"]
        )
    steps = data["config"].get("e2e_steps")
    columns = ["guide", "model", f"ours {steps} steps s (engine)", "pyro s", "ratio"]
    columns += ["converged at ours / pyro", "ours s to conv", "pyro s to conv", "ratio"]
    columns += ["final loss ours", "final loss pyro", "fit peak MiB ours / pyro"]
    return [
        "",
        f"## End to end (target <= 0.5x): {steps}-step fits",
        "",
        f'Ours: `guide_core.fit(..., steps={steps}, engine="auto")` timed from '
        "building the guide, recording and compiling included, in a fresh process "
        "with an empty inductor cache; pyro: `SVI.step` x "
        f"{steps}. Converged at: the step Stan's rule (relative ELBO change, "
        "tol 0.01, window 50) fires, as `fit` applies it; `ours s to conv` is a "
        "separate `fit(tol=0.01)`. Final loss: mean ± sd of the last 100 losses. "
        "Fit peak MiB: the whole fit's peak RSS over the process's RSS before it.",
        "",
        *_table(columns, rows),
    ]
