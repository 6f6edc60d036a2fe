"""HTML reports of a fit or a comparison: ``index.html`` with PNG figures beside it.

The page has no scripts and no external links; its style sheet is inline, so
the folder can be opened, zipped or attached as it is.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from ..draws.posterior import summary
from ..fitting.loop import FitResult
from .comparison import KHAT_LEGEND, Comparison, Entry, khat_cell, objective_of
from .plots import plot_compare, plot_fit, require_matplotlib

__all__ = ["write_compare_report", "write_fit_report"]

_STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.2em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.note { text-align: left; color: #555; }
tr.best td { font-weight: bold; }
img { max-width: 100%; }
.legend { color: #555; font-size: 0.9em; }
"""

_KHAT_MEANING = (
    "The PSIS k-hat is the shape of a Pareto distribution fitted to the largest "
    "importance weights p(x, z) / q(z) of draws z from the guide q: how far the "
    "guide is from the posterior where it matters."
)


def _page(title: str, body: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _save(figures: dict[str, Any], directory: Path, prefix: str) -> dict[str, str]:
    names = {}
    for key, fig in figures.items():
        name = f"{prefix}{key}.png"
        fig.savefig(directory / name, dpi=110)
        names[key] = name
    return names


def _img(name: str, alt: str) -> str:
    return f"<p><img src='{html.escape(name)}' alt='{html.escape(alt)}'></p>"


def _khat_legend() -> str:
    items = "".join(
        f"<li><b>{v}</b> ({html.escape(r)}): {html.escape(m)}</li>"
        for v, r, m in KHAT_LEGEND
    )
    meaning = f"<p class='legend'>{html.escape(_KHAT_MEANING)}</p>"
    return f"{meaning}<ul class='legend'>{items}</ul>"


def _directory(directory: str | Path) -> Path:
    require_matplotlib("the report")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_fit_report(
    result: FitResult,
    directory: str | Path,
    *args: Any,
    title: str = "fit",
    num_samples: int = 1000,
    **kwargs: Any,
) -> Path:
    """Write the report of one fit to ``directory/index.html``.

    Parameters
    ----------
    result : FitResult
        What :func:`~guide_core.fit` returned.
    directory : str or Path
        Created if missing; ``index.html`` and the PNG figures go in it.
    *args, **kwargs :
        The model's arguments.
    title : str
        The page's heading.
    num_samples : int
        Posterior draws for the figures and the summary table.

    Returns
    -------
    Path
        The path of ``index.html``.
    """
    path = _directory(directory)
    figures = plot_fit(result, *args, num_samples=num_samples, **kwargs)
    files = _save(figures, path, "fit_")
    state = "converged" if result.converged else "stopped"
    if result.interrupted:
        state = "interrupted"
    objective = objective_of(result.guide)
    body = [
        f"<p>{html.escape(type(result.guide).__name__)}: {state} after "
        f"{result.steps} steps in {result.seconds:.1f} s "
        f"({result.ms_per_step:.2f} ms/step). Objective: "
        f"{'ELBO' if objective == 'elbo' else objective.upper() + ' (not an ELBO)'}."
        "</p>",
        "<h2>Loss</h2>",
        _img(files["loss"], "loss curve"),
        "<h2>Posterior marginals</h2>",
        _img(files["posterior"], "posterior marginals"),
        "<pre>"
        + html.escape(
            summary(result.guide, *args, num_samples=num_samples, **kwargs).table()
        )
        + "</pre>",
        "<h2>PSIS k-hat</h2>",
    ]
    if "khat" in files:
        body += [
            f"<p><b>{html.escape(str(result.khat))}</b></p>",
            _img(files["khat"], "k-hat"),
        ]
    else:
        body.append("<p>not computed</p>")
    body.append(_khat_legend())
    target = path / "index.html"
    target.write_text(_page(title, body), encoding="utf-8")
    return target


def _row(cells: list[str], css: str = "") -> str:
    klass = f" class='{css}'" if css else ""
    return (
        f"<tr{klass}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
    )


def _fitted_cells(entry: Entry, mark: str = "") -> list[str]:
    r = entry.result
    assert r is not None
    return [
        entry.name + mark,
        entry.objective_label,
        f"{entry.value:.3f}",
        f"{r.ms_per_step:.2f}",
        khat_cell(r),
        f"{entry.seconds:.1f}" if math.isfinite(entry.seconds) else "-",
        str(r.steps),
    ]


def comparison_html(comparison: Comparison) -> str:
    """The comparison as HTML tables: ranked ELBOs, then the point estimates."""
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "guide",
            "objective",
            "final value",
            "ms/step",
            "k-hat",
            "time s",
            "steps",
        )
    )
    best = comparison.best()
    rows = [
        _row(
            _fitted_cells(e, " (best ELBO)" if e is best else ""),
            "best" if e is best else "",
        )
        for e in comparison.ranked()
    ]
    for e in comparison.unranked():
        if e.status == "fitted":
            rows.append(_row(_fitted_cells(e)))
        else:
            rows.append(
                f"<tr><td>{html.escape(e.name)}</td><td class='note' colspan='6'>"
                f"{html.escape(e.status)}: {html.escape(e.reason)}</td></tr>"
            )
    out = [f"<table><tr>{head}</tr>{''.join(rows)}</table>"]
    points = comparison.point_estimates()
    if points:
        out.append(
            "<h3>MAP / Laplace guides (not ranked)</h3><p class='legend'>Their "
            "objective is log p(x, z) at one point: there is no entropy term, so it "
            "is not an ELBO and cannot be compared with the values above.</p>"
        )
        out.append(
            f"<table><tr>{head}</tr>"
            + "".join(_row(_fitted_cells(e)) for e in points)
            + "</table>"
        )
    return "\n".join(out)


def write_compare_report(
    comparison: Comparison,
    directory: str | Path,
    *args: Any,
    title: str = "comparison",
    num_samples: int = 500,
    **kwargs: Any,
) -> Path:
    """Write the report of a comparison to ``directory/index.html``.

    Parameters
    ----------
    comparison : Comparison
        The guides compared.
    directory : str or Path
        Created if missing; ``index.html`` and the PNG figures go in it.
    *args, **kwargs :
        The model's arguments.
    title : str
        The page's heading.
    num_samples : int
        Posterior draws per guide for the forest plot.

    Returns
    -------
    Path
        The path of ``index.html``.
    """
    path = _directory(directory)
    body = ["<h2>Table</h2>", comparison_html(comparison), _khat_legend()]
    if comparison.results():
        figures = plot_compare(comparison, *args, num_samples=num_samples, **kwargs)
        files = _save(figures, path, "compare_")
        body += [
            "<h2>Posterior intervals</h2>",
            _img(files["forest"], "forest plot"),
            "<h2>Loss curves</h2>",
            _img(files["loss"], "loss curves"),
        ]
    target = path / "index.html"
    target.write_text(_page(title, body), encoding="utf-8")
    return target
