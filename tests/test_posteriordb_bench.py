"""The posteriordb accuracy benchmark: its metrics, report and one real run."""

import json
import types

import numpy as np
import pytest

from benchmarks.posteriordb import bench


def _normal(n=4000, k=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, k))


def test_equal_draws_score_perfectly():
    ref = _normal()
    assert bench.mean_error(ref, ref) == 0.0
    assert bench.sd_ratios(ref, ref) == (1.0, 1.0)
    assert bench.w1(ref, ref) == 0.0


def test_shifted_normal_gives_its_shift_in_sds():
    ref = _normal() * np.array([1.0, 2.0, 0.5])
    shifted = ref + np.array([0.1, 0.6, 0.1])  # 0.1, 0.3, 0.2 sds
    assert bench.mean_error(shifted, ref) == pytest.approx(0.3, rel=0.03)
    assert bench.sd_ratios(shifted, ref) == pytest.approx((1.0, 1.0))
    # a pure shift moves every quantile by the shift: w1 = mean shift / sd
    assert bench.w1(shifted, ref) == pytest.approx(0.2, rel=0.03)


def test_scaled_draws_give_their_sd_ratios():
    ref = _normal()
    scaled = ref * np.array([0.5, 1.0, 2.0])
    low, high = bench.sd_ratios(scaled, ref)
    assert (low, high) == pytest.approx((0.5, 2.0))
    assert bench.mean_error(scaled, ref) < 0.05


def test_metrics_flatten_sites_of_any_shape():
    rng = np.random.default_rng(1)
    reference = {"beta": rng.standard_normal((500, 2, 3)), "sigma": rng.random(500)}
    draws = {"beta": reference["beta"] + 0.5, "sigma": reference["sigma"]}
    out = bench.metrics(draws, reference)
    assert set(out) == {"mean_err", "sd_ratio_min", "sd_ratio_max", "w1"}
    assert out["mean_err"] == pytest.approx(0.5 / reference["beta"].std(0).min(), 0.01)
    assert out["sd_ratio_min"] == pytest.approx(1.0)
    assert 0 < out["w1"] < out["mean_err"]


def test_a_failing_cell_reports_its_error(monkeypatch):
    def broken(model, data):
        raise ValueError("x" * 200)

    monkeypatch.setitem(bench.FITTERS, "fit_normal", broken)
    post = types.SimpleNamespace(model=None, data={}, reference={})
    cell = bench.run_cell(post, "fit_normal", seed=0, draws=10)
    assert cell == {"error": "ValueError: " + "x" * 80}
    assert bench.cell_text(cell).startswith("error: ValueError: xxx")


def _cell(mean_err, low, high, w1, grads, seconds):
    return dict(
        mean_err=mean_err,
        sd_ratio_min=low,
        sd_ratio_max=high,
        w1=w1,
        grads=grads,
        seconds=seconds,
    )


def test_targets_and_markdown():
    results = {
        "good": {
            "name": "good-model",
            "exclude": None,
            "note": None,
            "cells": {
                "pyro_normal": _cell(0.5, 0.5, 1.1, 0.3, 3000, 5.0),
                "fit_mvn": _cell(0.1, 0.9, 1.1, 0.05, 400, 1.0),
                "fit_normal": _cell(0.3, 0.4, 1.0, 0.2, 400, 6.0),
                "pathfinder_4": _cell(0.1, 0.9, 1.0, 0.1, 200, 0.5),
            },
        },
        "funnel": {
            "name": "funnel",
            "exclude": "a funnel",
            "note": None,
            "cells": {
                "pyro_normal": _cell(0.5, 0.5, 1.1, 0.3, 3000, 5.0),
                "fit_mvn": {"error": "RuntimeError: boom"},
                "pathfinder_4": _cell(0.5, 0.5, 1.1, 0.5, 400, 0.5),
            },
        },
        "missing": {"name": "missing", "exclude": None, "note": "skipped: x"},
    }
    results["missing"]["cells"] = {}
    check = bench.targets(results)
    assert check["a"]["good"] == "fit_mvn pass, fit_normal FAIL"
    assert check["a"]["funnel"] == "excluded: a funnel"
    assert check["a"]["missing"] == "excluded: skipped: x"
    assert check["b"] == {
        "posteriors": 2,
        "share_w1": 0.5,
        "grads_ok": False,
        "pass": False,
        "misses": {"funnel": ["w1", "grads"]},
    }
    assert check["c"] == {"good": ["fit_normal"], "funnel": ["fit_mvn"]}
    config = {"seed": 0, "draws": 1000, "methods": ["pyro_normal", "fit_mvn"]}
    text = bench.to_markdown(results, config)
    assert "| good | 0.50 / 0.50-1.10 / 0.30 / 3000 / 5.0s | 0.10 /" in text
    assert "| missing | skipped: x | |" in text
    assert "error: RuntimeError: boom" in text
    assert "- good: not faster: fit_normal" in text
    assert "- funnel: w1 and grads missed" in text


def test_cli_writes_reports_and_skips_unknown_posteriors(tmp_path, capsys):
    report = bench.main(["--posteriors", "no_such", "--out", str(tmp_path)])
    assert report["results"]["no_such"]["note"].startswith("skipped: KeyError")
    assert "| no_such | skipped: KeyError" in (tmp_path / "bench.md").read_text()
    assert json.loads((tmp_path / "bench.json").read_text())["config"]["seed"] == 0
    assert "# Accuracy on posteriordb posteriors" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--methods", "nope", "--out", str(tmp_path)])


@pytest.mark.slow
def test_kidiq_meets_the_fit_mvn_target():
    results = bench.run(["kidiq"], ["fit_mvn", "pathfinder_4"], seed=0, draws=1000)
    cells = results["kidiq"]["cells"]
    assert "error" not in cells["pathfinder_4"], cells["pathfinder_4"]
    mvn = cells["fit_mvn"]
    assert "error" not in mvn, mvn
    assert mvn["mean_err"] < 0.25, mvn
    assert 0.8 <= mvn["sd_ratio_min"] and mvn["sd_ratio_max"] <= 1.25, mvn
