"""Benchmarks: guide_core's guides timed against ``pyro.infer.autoguide``.

Run ``python -m benchmarks --out benchmarks/results`` (or ``nox -s bench``); see
``benchmarks/README.md``. From Python::

    from benchmarks import BenchConfig, run_benchmarks, write_reports
    result = run_benchmarks(BenchConfig(guides=("auto_normal",), quick=True))
    write_reports(result, "benchmarks/results")
"""

from __future__ import annotations

from .harness import (
    BenchConfig,
    BenchResult,
    CellResult,
    machine_info,
    run_benchmarks,
    run_cell,
    select_guides,
)
from .isolation import Slot
from .memory import PeakMeter
from .models import MODEL_NAMES, ModelCase, build_model, build_suite
from .report import COLUMNS, to_json, to_markdown, write_reports
from .timing import Runner, SideResult, measure_floor, time_pair

__all__ = [
    "COLUMNS",
    "MODEL_NAMES",
    "BenchConfig",
    "BenchResult",
    "CellResult",
    "ModelCase",
    "PeakMeter",
    "Runner",
    "SideResult",
    "Slot",
    "build_model",
    "build_suite",
    "machine_info",
    "measure_floor",
    "run_benchmarks",
    "run_cell",
    "select_guides",
    "time_pair",
    "to_json",
    "to_markdown",
    "write_reports",
]
