"""Figures, HTML reports, the fair comparison table, line progress and ArviZ."""

from __future__ import annotations

import importlib
import io

import matplotlib
import pyro
import pyro.distributions as dist
import pytest
import torch
from matplotlib.collections import LineCollection

import guide_core
from guide_core import (
    AutoDelta,
    AutoGuideList,
    AutoLaplaceApproximation,
    AutoNormal,
    GuideSpec,
    MissingExtraError,
    fit,
    plot_compare,
    plot_fit,
    to_inference_data,
)
from guide_core.cli.examples import EXAMPLES
from guide_core.workflow.fitting.progress import LineProgress
from guide_core.workflow.report.comparison import Comparison, objective_of
from guide_core.workflow.report.html import write_compare_report, write_fit_report

matplotlib.use("Agg")  # ArviZ draws through pyplot; never open a window

checks = importlib.import_module("guide_core.registry.checks")
MODEL, DATA = EXAMPLES["eight_schools"]


def _fit(guide_class, steps=40, **kwargs):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = guide_class(MODEL)
    return fit(
        MODEL,
        guide,
        steps=steps,
        progress=False,
        khat_samples=50,
        **DATA(),
        **kwargs,
    )


def _interval_lines(ax):
    """The 90% interval collections of an axes (the labelled ones)."""
    return [
        c
        for c in ax.collections
        if isinstance(c, LineCollection) and not c.get_label().startswith("_")
    ]


def test_plot_fit_draws_the_loss_the_marginals_and_the_khat():
    result = _fit(AutoNormal, steps=120, tol=0.5, window=10)
    figs = plot_fit(result, num_samples=100, **DATA())
    assert set(figs) == {"loss", "posterior", "khat"}
    (loss,) = figs["loss"].axes
    assert "loss" in loss.get_title() and "steps/s" in loss.get_title()
    assert f"({result.engine} engine)" in loss.get_title()
    labels = [line.get_label() for line in loss.get_lines()]
    assert "loss (each step)" in labels and any("smoothed" in x for x in labels)
    assert result.converged and f"converged, step {result.steps}" in labels
    assert len(loss.get_lines()[0].get_xdata()) == result.steps
    axes = figs["posterior"].axes
    assert [ax.get_title(loc="left") for ax in axes] == ["mu", "tau", "theta [8]"]
    assert len(axes[0].get_lines()) == 1  # a density for a scalar site
    (ninety,) = [c for c in axes[2].collections if c.get_linewidth()[0] < 2]
    assert len(ninety.get_segments()) == 8  # one interval per school
    (khat,) = figs["khat"].axes
    assert khat.get_title().startswith("PSIS k-hat") and result.khat.verdict in (
        khat.get_title()
    )


def test_plot_fit_caps_the_elements_and_says_how_many_are_left():
    def wide():
        pyro.sample("z", dist.Normal(torch.zeros(20), 1.0).to_event(1))

    pyro.clear_param_store()
    result = fit(wide, AutoNormal(wide), steps=5, progress=False, khat=False)
    figs = plot_fit(result, num_samples=50, max_elements=12)
    assert set(figs) == {"loss", "posterior"}
    (ax,) = figs["posterior"].axes
    (ninety,) = [c for c in ax.collections if c.get_linewidth()[0] < 2]
    assert len(ninety.get_segments()) == 12
    assert "8 more elements" in ax.get_xlabel()


def test_a_point_mass_is_drawn_as_a_line_not_a_density():
    result = _fit(AutoDelta, khat=False)
    axes = plot_fit(result, num_samples=20, **DATA())["posterior"].axes
    assert [line.get_label() for line in axes[0].get_lines()] == ["point mass"]
    assert (
        "MAP"
        in plot_fit(result, num_samples=5, **DATA())["loss"].axes[0].title.get_text()
    )


def test_plot_compare_puts_every_guide_side_by_side():
    results = {"auto_normal": _fit(AutoNormal), "auto_delta": _fit(AutoDelta)}
    figs = plot_compare(results, num_samples=50, **DATA())
    forest = figs["forest"].axes
    assert [ax.get_title(loc="left") for ax in forest] == ["mu", "tau", "theta"]
    for ax in forest:
        lines = _interval_lines(ax)
        assert [c.get_label() for c in lines] == [
            "auto_normal",
            "auto_delta (MAP, not an ELBO)",
        ]
    assert len(_interval_lines(forest[2])[0].get_segments()) == 8
    assert len(forest[0].get_yticks()) == 1 and len(forest[2].get_yticks()) == 8
    (loss,) = figs["loss"].axes
    lines = loss.get_lines()
    assert [line.get_label() for line in lines] == [
        "auto_normal",
        "auto_delta (MAP, not an ELBO)",
    ]
    assert lines[0].get_linestyle() == "-" and lines[1].get_linestyle() == "--"


def test_a_missing_matplotlib_is_a_one_line_error_naming_the_extra(monkeypatch):
    monkeypatch.setattr(checks, "missing_modules", lambda names: ["matplotlib"])
    result = _fit(AutoNormal, steps=2, khat=False)
    with pytest.raises(MissingExtraError, match=r"guide-core\[plot\]"):
        plot_fit(result, **DATA())


def test_the_fit_report_references_every_figure(tmp_path):
    result = _fit(AutoNormal)
    index = write_fit_report(result, tmp_path / "out", num_samples=50, **DATA())
    text = index.read_text()
    pngs = sorted(p.name for p in index.parent.glob("*.png"))
    assert pngs == ["fit_khat.png", "fit_loss.png", "fit_posterior.png"]
    assert all(f"src='{name}'" in text for name in pngs)
    assert str(result.khat) in text and "&lt; 0.5" in text and "theta[7]" in text
    assert "http" not in text and "<script" not in text  # self-contained


def _comparison():
    comparison = Comparison("eight schools")
    comparison.add("auto_normal", _fit(AutoNormal))
    comparison.add("auto_delta", _fit(AutoDelta))
    comparison.add("auto_laplace_approximation", _fit(AutoLaplaceApproximation))
    try:
        _fit(guide_core.AutoHierarchicalNormalMessenger)
    except ValueError as exc:
        comparison.add_failure("auto_hierarchical_normal_messenger", exc)
    comparison.add_failure("auto_gaussian", RuntimeError("boom"))
    return comparison


def test_the_comparison_ranks_elbos_only_and_marks_the_rest():
    comparison = _comparison()
    assert [e.name for e in comparison.ranked()] == ["auto_normal"]
    assert comparison.best().name == "auto_normal"
    assert [e.objective for e in comparison.point_estimates()] == ["map", "laplace"]
    table = comparison.table()
    first, points = table.split("MAP / Laplace")
    assert "auto_delta" not in first and "auto_delta" in points
    assert "auto_normal" in first and " *" in first and "best ELBO" in first
    line = next(x for x in first.splitlines() if x.startswith("auto_hier"))
    assert "not applicable: site 'tau' has a prior without a finite mean" in line
    line = next(x for x in first.splitlines() if x.startswith("auto_gaussian"))
    assert line.split() == ["auto_gaussian", "error:", "RuntimeError:", "boom"]
    assert "good" in table and "< 0.5" in table and "> 0.7" in table


def test_only_a_model_error_at_construction_or_step_one_is_not_applicable():
    comparison = Comparison()
    late = ValueError("bad value")
    late.add_note("(raised by guide_core.fit at step 7)")
    first = NotImplementedError("no support for this site")
    first.add_note("(raised by guide_core.fit at step 1)")
    for i, exc in enumerate([late, first, ValueError("x"), TypeError("y")]):
        comparison.add_failure(f"g{i}", exc)
    statuses = [e.status for e in comparison.entries]
    assert statuses == ["error", "not applicable", "not applicable", "error"]


def test_the_compare_report_has_the_table_and_every_figure(tmp_path):
    index = write_compare_report(_comparison(), tmp_path, num_samples=30, **DATA())
    text = index.read_text()
    for name in ("compare_forest.png", "compare_loss.png"):
        assert (tmp_path / name).is_file() and f"src='{name}'" in text
    assert "auto_normal (best ELBO)" in text and "not applicable: site" in text
    assert text.index("MAP / Laplace") < text.index("auto_delta")


def test_objectives_come_from_the_registry_and_default_to_elbo():
    assert objective_of(AutoDelta(MODEL)) == "map"
    assert objective_of(AutoLaplaceApproximation(MODEL)) == "laplace"
    assert objective_of(AutoNormal(MODEL)) == "elbo"
    assert objective_of(None, "auto_delta") == "map"
    parts = AutoGuideList(MODEL)
    parts.append(AutoDelta(pyro.poutine.block(MODEL, expose=["mu"])))
    assert objective_of(parts) == "map"
    spec = GuideSpec(name="auto_x", factory=AutoNormal, family="x", summary="x")
    assert spec.objective == "elbo"
    with pytest.raises(ValueError):
        GuideSpec(
            name="auto_x", factory=AutoNormal, family="x", summary="x", objective="mle"
        )


def test_fit_writes_a_bounded_number_of_lines_when_not_a_terminal(capsys, caplog):
    pyro.clear_param_store()
    with caplog.at_level("INFO", logger="guide_core.fit"):
        result = fit(
            MODEL, AutoNormal(MODEL), steps=500, tol=None, khat=False, **DATA()
        )
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert 2 <= len(lines) <= 12, err
    # the engine in a word; why, in the result and the log
    assert "\r" not in err and lines[-1].startswith(f"fit [{result.engine}]: ")
    assert ": 500/500 steps (100%)" in lines[-1]
    assert f"engine {result.engine}: {result.engine_reason}" in caplog.text


def test_line_progress_also_writes_every_interval():
    stream = io.StringIO()
    bar = LineProgress(1000, "fit", stream, interval=0.0)
    for _ in range(3):
        bar.update()
    bar.close()
    assert len(stream.getvalue().splitlines()) == 3  # the last is not repeated


def test_to_inference_data_works_with_arviz():
    az = pytest.importorskip("arviz")
    import matplotlib.pyplot as plt

    _fit(AutoNormal, khat=False)
    guide = AutoNormal(MODEL)
    fit(MODEL, guide, steps=5, progress=False, khat=False, **DATA())
    data = to_inference_data(guide, num_samples=100, **DATA())
    table = az.summary(data, kind="stats")
    assert {"mu", "tau", "theta[0]", "theta[7]"} <= set(table.index)
    assert list(table.columns[:2]) == ["mean", "sd"]
    try:
        axes = az.plot_posterior(data, var_names=["mu", "tau"])
        assert {ax.get_title() for ax in axes.ravel()} == {"mu", "tau"}
        (forest,) = az.plot_forest(data, var_names=["theta"], combined=True)
        assert len(forest.get_yticks()) == 8
    finally:
        plt.close("all")


def _conjugate(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0).to_event(1), obs=y)


def test_a_laplace_guide_is_plotted_with_its_gaussian_not_its_point():
    """AutoLaplaceApproximation trains a point; its posterior is the Gaussian
    of laplace_approximation() (here exactly the posterior: std 1/sqrt(5)),
    which is what the marginals show."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    y = torch.randn(4, 3) + 1.0
    guide = AutoLaplaceApproximation(_conjugate)
    result = fit(
        _conjugate,
        guide,
        y,
        steps=300,
        progress=False,
        khat=False,
        optim=pyro.optim.Adam({"lr": 0.05}),
    )
    draws = guide_core.workflow.draws.posterior.posterior_draws(
        guide, y, num_samples=4000
    )
    torch.testing.assert_close(draws["mu"].mean(0), y.sum(0) / 5, atol=0.05, rtol=0)
    torch.testing.assert_close(
        draws["mu"].std(0), torch.full((3,), 5**-0.5), atol=0.03, rtol=0
    )
    (ax,) = plot_fit(result, y, num_samples=200)["posterior"].axes
    (ninety,) = [c for c in ax.collections if c.get_linewidth()[0] < 2]
    widths = [abs(seg[1][0] - seg[0][0]) for seg in ninety.get_segments()]
    assert len(widths) == 3 and min(widths) > 0.5, widths  # 90%: about 1.5
