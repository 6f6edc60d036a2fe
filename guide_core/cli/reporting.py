"""The ``--report DIR`` option of ``guide-core fit`` and ``guide-core compare``."""

from __future__ import annotations

import argparse
from typing import Any

from ..workflow.fitting.loop import FitResult
from ..workflow.report.comparison import Comparison
from ..workflow.report.html import write_compare_report, write_fit_report
from ..workflow.report.plots import require_matplotlib

__all__ = ["add_report_option", "check_report", "compare_report", "fit_report"]


def add_report_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--report DIR`` to a sub-command's parser."""
    parser.add_argument(
        "--report",
        metavar="DIR",
        help="write DIR/index.html with PNG figures (needs guide-core[plot])",
    )


def check_report(args: argparse.Namespace) -> None:
    """Fail before any fitting if a report is asked for and matplotlib is missing."""
    if getattr(args, "report", None):
        require_matplotlib("--report")


def fit_report(args: argparse.Namespace, result: FitResult, problem: tuple) -> None:
    """Write the report of one fit if ``--report`` was given, and say where."""
    if not getattr(args, "report", None):
        return
    _, model_args, model_kwargs, label = problem
    path = write_fit_report(
        result,
        args.report,
        *model_args,
        title=f"{args.guide} on {label}",
        num_samples=args.num_samples,
        **model_kwargs,
    )
    print(f"report written to {path}")


def compare_report(
    args: argparse.Namespace, comparison: Comparison, problem: tuple, **options: Any
) -> None:
    """Write the report of a comparison if ``--report`` was given, and say where."""
    if not getattr(args, "report", None):
        return
    _, model_args, model_kwargs, label = problem
    path = write_compare_report(
        comparison,
        args.report,
        *model_args,
        title=f"guides compared on {label}",
        **options,
        **model_kwargs,
    )
    print(f"report written to {path}")
