"""Write a :class:`~benchmarks.harness.BenchResult` as markdown and as JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from . import sections
from .harness import BenchResult
from .sections import cell_text as _cell_text
from .sections import loss as _loss
from .sections import ms as _ms
from .sections import ratio as _ratio

__all__ = ["COLUMNS", "to_json", "to_markdown", "write_reports", "write_section"]

COLUMNS: tuple[str, ...] = (
    "guide",
    "model",
    "ours ms/step",
    "pyro ms/step",
    "ratio",
    "floor ms",
    "ours/floor",
    "pyro/floor",
    "final loss ours",
    "final loss pyro",
)


def json_safe(x: Any) -> Any:
    """Replace NaN/inf (which strict JSON lacks) by ``None``, recursively."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def _engine_cells(cell: dict[str, Any], engines: list[str]) -> list[str]:
    out = []
    for name in engines:
        side = cell.get("engines", {}).get(name)
        if side is None:
            out.append("-")
        elif side["error"]:
            out.append(f"ERROR: {_cell_text(side['error'])}")
        else:
            ran = side.get("ran")
            note = "" if ran in (None, name) else f" ({ran})"
            out.append(f"{_ms(side['ms'])}{note}")
    return out


def _row(cell: dict[str, Any]) -> list[str]:
    ours = (
        f"ERROR: {_cell_text(cell['ours_error'])}"
        if cell["ours_error"]
        else _ms(cell["ours_ms"])
    )
    pyro = (
        f"ERROR: {_cell_text(cell['pyro_error'])}"
        if cell["pyro_error"]
        else _ms(cell["pyro_ms"])
    )
    floor = (
        f"ERROR: {_cell_text(cell['floor_error'])}"
        if cell["floor_error"]
        else _ms(cell["floor_ms"])
    )
    guide = cell["guide"]
    if cell.get("backend"):
        guide = f"{guide} ({cell['backend']})"
    return [
        guide,
        cell["model"],
        ours,
        pyro,
        _ratio(cell["ratio"]),
        floor,
        _ratio(cell["ours_over_floor"]),
        _ratio(cell["pyro_over_floor"]),
        _loss(cell["final_loss_ours"]),
        _loss(cell["final_loss_pyro"]),
    ]


def to_json(result: BenchResult) -> dict[str, Any]:
    """Return the whole result as a strict-JSON-ready dict (NaN becomes null)."""
    return json_safe(
        {
            "machine": result.machine,
            "config": dataclasses.asdict(result.config),
            "columns": list(COLUMNS),
            "cells": [cell.as_dict() for cell in result.cells],
            "no_pyro": result.no_pyro,
            "end_to_end": result.end_to_end,
            "notes": result.notes,
        }
    )


def to_markdown(result: BenchResult) -> str:
    """Return the markdown report: a header, the table, the extra sections, errors."""
    data = to_json(result)
    m, c = data["machine"], data["config"]
    engines = list(c.get("engines") or ())
    paired = [cell for cell in data["cells"] if not cell["pyro_missing"]]
    extra = sections.numpyro_header(data)
    columns = [*COLUMNS[:4], *(f"{e} ms/step" for e in engines), *extra, *COLUMNS[4:]]
    lines = [
        "# guide_core vs pyro.infer.autoguide",
        "",
        f"torch {m.get('torch')}, pyro {m.get('pyro')}, guide_core "
        f"{m.get('guide_core')}, {m.get('torch_threads')} thread(s), "
        f"{m.get('default_dtype')} on {m.get('default_device')}, "
        f"{m.get('platform')}",
        "",
        f"Median ms per SVI step (Trace_ELBO, Adam lr={c['lr']}) over "
        f"{c['rounds']} alternating rounds x {c['steps']} steps per side, after "
        f"{c['warmup']} warm-up steps; ratio = ours/pyro; floor = model-only "
        f"trace + log_prob_sum + backward; final loss = mean of the last "
        f"{c['loss_window']} losses{' (quick sizes)' if c['quick'] else ''}. "
        "Ratios come from this one run and are never asserted on."
        + (
            f" The {', '.join(engines)} columns are our guide stepped by that "
            "guide_core.fit engine (the engine that ran, if another, in brackets);"
            " pyro_jit is Pyro's guide under JitTrace_ELBO."
            if engines
            else ""
        ),
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(columns) - 2)) + "|",
    ]
    for cell in paired:
        row = _row(cell)
        numpyro = sections.numpyro_cells(cell, data) if extra else []
        row = [*row[:4], *_engine_cells(cell, engines), *numpyro, *row[4:]]
        lines.append("| " + " | ".join(row) + " |")
    if not paired:
        lines.append(
            "| " + " | ".join(["(no cells)"] + [""] * (len(columns) - 1)) + " |"
        )
    lines += sections.notes(data)
    lines += sections.no_pyro_table(data, _engine_cells)
    lines += sections.memory_table(data)
    lines += sections.batched_table(data)
    lines += sections.end_to_end_table(data)
    errors = [
        (cell["guide"], cell["model"], side, cell[f"{side}_error"])
        for cell in data["cells"]
        for side in ("ours", "pyro", "floor")
        if cell[f"{side}_error"] and not (side == "ours" and cell["not_applicable"])
    ]
    if errors:
        lines += ["", "Errors:", ""]
        lines += [
            f"- `{guide}` on `{model}` ({side}): {_cell_text(text, 10_000)}"
            for guide, model, side, text in errors
        ]
    return "\n".join(lines) + "\n"


def write_reports(result: BenchResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``bench.md`` and ``bench.json`` into ``out_dir`` (created if needed).

    Returns
    -------
    (Path, Path)
        The markdown and JSON paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out / "bench.md", out / "bench.json"
    md_path.write_text(to_markdown(result), encoding="utf-8")
    json_path.write_text(
        json.dumps(to_json(result), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    return md_path, json_path


def write_section(out_dir: Path, stem: str, text: str, report: dict) -> dict:
    """Write ``<stem>.md`` and ``<stem>.json`` of a bench section into
    ``out_dir`` (created if needed), print the markdown, return ``report``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.md").write_text(text)
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=1))
    print(text)
    return report
