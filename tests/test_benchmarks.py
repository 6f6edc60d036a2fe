"""Smoke tests of the benchmark harness (``python -m benchmarks``) and its models.

Only the mechanics are checked: that cells are measured and reported, that a
guide that raises becomes an error cell, and that the two sides of a cell are
isolated. Timings and ratios are never asserted on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pyro
import pyro.infer.autoguide as pyro_autoguide
import pytest
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

# ``benchmarks`` lives at the repository root, which is not installed and is not
# on sys.path when pytest is run as a script (nox); put it there.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import (  # noqa: E402
    MODEL_NAMES,
    BenchConfig,
    Slot,
    build_model,
    build_suite,
    probes,
    run_benchmarks,
    select_guides,
    to_markdown,
    write_reports,
)
from benchmarks.__main__ import main  # noqa: E402
from benchmarks.memory import PeakMeter  # noqa: E402
from benchmarks.timing import fixed_latents  # noqa: E402
from guide_core import GuideSpec, hookimpl, registry  # noqa: E402

DELTA, BROKEN, NOWHERE = "bench_test_delta", "bench_test_broken", "bench_test_nowhere"
BATCHED = "auto_batched_multivariate_normal"


class AutoDelta(pyro_autoguide.AutoDelta):
    """Pyro's own AutoDelta, registered as "ours" (allowed in tests only)."""


class AutoNormal(pyro_autoguide.AutoNormal):
    """A guide that fails on every model, as an unsupported case would."""

    def _setup_prototype(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("bench test: this model is not supported")


class AutoBenchNowhere(pyro_autoguide.AutoDelta):
    """A guide whose class name Pyro lacks, so there is nothing to compare."""


class _BenchTestPlugin:
    @hookimpl
    def register_guides(self, register: Callable[[GuideSpec], None]) -> None:
        for name, factory in [(DELTA, AutoDelta), (BROKEN, AutoNormal)]:
            register(
                GuideSpec(
                    name=name, factory=factory, family="bench_test", summary="test"
                )
            )
        register(
            GuideSpec(
                name=NOWHERE, factory=AutoBenchNowhere, family="bench_test", summary="t"
            )
        )


@pytest.fixture
def bench_plugin() -> Iterator[str]:
    """Register the test plugin for one test; always unregister it."""
    name = registry.register(_BenchTestPlugin(), name="bench_test_plugin")
    try:
        yield name
    finally:
        registry.unregister(name)
    assert DELTA not in registry.names()


def _latent_shapes(case) -> dict[str, tuple[int, ...]]:
    trace = poutine.trace(case.model).get_trace(*case.args)
    return {
        name: tuple(site["value"].shape)
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not site_is_subsample(site)
    }


# -- the model suite -----------------------------------------------------------

EXPECTED = {
    "tiny": {"scale": (), "loc": (), "coef": (2,)},
    "hierarchical": {"loc": (), "scale": (), "theta": (1000,)},
    "logistic": {"weights": (200,)},
    "random_walk": {"increments": (500,)},
    "grouped": {"theta": (250, 4)},
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_has_the_stated_latents(name: str) -> None:
    case = build_model(name)
    assert _latent_shapes(case) == EXPECTED[name] == case.latents
    assert list(fixed_latents(case)) == list(EXPECTED[name])
    for arg in case.args:
        assert arg.dtype == torch.get_default_dtype()
        assert torch.isfinite(arg).all()


def test_model_sizes() -> None:
    assert build_model("logistic").args[0].shape == (5000, 200)
    assert build_model("hierarchical").args[0].shape == (1000,)
    assert build_model("tiny").args[1].shape[0] >= 3


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_quick_model_is_smaller_and_traces(name: str) -> None:
    full, quick = build_model(name), build_model(name, quick=True)
    shapes = _latent_shapes(quick)
    assert list(shapes) == list(quick.latents) == list(full.latents)
    assert sum(math.prod(s) for s in shapes.values()) <= sum(
        math.prod(s) for s in full.latents.values()
    )


def test_model_data_are_fixed_and_leave_the_global_rng_alone() -> None:
    rng = torch.get_rng_state()
    first, second = build_suite(quick=True), build_suite(quick=True)
    assert torch.equal(rng, torch.get_rng_state())
    assert [c.name for c in first] == list(MODEL_NAMES)
    for a, b in zip(first, second):
        assert all(torch.equal(x, y) for x, y in zip(a.args, b.args))
    with pytest.raises(ValueError, match="unknown benchmark model"):
        build_suite(["nope"])


# -- isolation -----------------------------------------------------------------


def test_slots_isolate_params_and_rng() -> None:
    pyro.param("outer", torch.tensor(7.0))
    a, b = Slot(seed=3), Slot(seed=3)
    with a.active():
        assert "outer" not in pyro.get_param_store()
        pyro.param("x", torch.tensor(1.0))
        draw_a = torch.randn(3)
    with b.active():
        assert "x" not in pyro.get_param_store()
        pyro.param("x", torch.tensor(2.0))
        draw_b = torch.randn(3)
    with a.active():
        assert pyro.param("x").item() == 1.0
        next_a = torch.randn(3)
    with b.active():
        next_b = torch.randn(3)
    assert torch.equal(draw_a, draw_b) and torch.equal(next_a, next_b)
    assert list(pyro.get_param_store()) == ["outer"]
    assert a.param_names == b.param_names == ["x"]


# -- the harness ---------------------------------------------------------------


def _finite_positive(x: object) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_harness_reports_cells_and_error_cells(
    bench_plugin: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pyro.param("sentinel", torch.tensor(1.0))
    rng = torch.get_rng_state()
    argv = ["--quick", "--guides", f"{DELTA},{BROKEN}", "--models", "tiny,logistic"]
    argv += ["--steps", "2", "--rounds", "2", "--warmup", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out

    # The caller's param store and RNG are untouched.
    assert list(pyro.get_param_store()) == ["sentinel"]
    assert torch.equal(rng, torch.get_rng_state())

    data = json.loads((tmp_path / "bench.json").read_text())
    md = (tmp_path / "bench.md").read_text()
    assert printed == md
    assert data["machine"]["torch"] == torch.__version__
    assert data["machine"]["pyro"] == pyro.__version__
    assert data["machine"]["torch_threads"] == 1
    cells = {(c["guide"], c["model"]): c for c in data["cells"]}
    assert set(cells) == {(g, m) for g in (DELTA, BROKEN) for m in ("tiny", "logistic")}

    for model in ("tiny", "logistic"):
        cell = cells[(DELTA, model)]
        assert cell["class_name"] == "AutoDelta"
        for key in ("ours_ms", "pyro_ms", "ratio", "floor_ms", "ours_over_floor"):
            assert _finite_positive(cell[key]), (key, cell[key])
        assert _finite_positive(cell["pyro_over_floor"])
        assert len(cell["ours_steps_ms"]) == len(cell["pyro_steps_ms"]) == 4
        assert math.isfinite(cell["final_loss_ours"])
        # Same class, same seed, separate param stores: the same trajectory.
        assert cell["final_loss_ours"] == pytest.approx(cell["final_loss_pyro"])
        assert cell["ours_error"] is cell["pyro_error"] is None
        assert f"| {DELTA} | {model} | " in md

        broken = cells[(BROKEN, model)]
        assert "NotImplementedError" in broken["ours_error"]
        assert "not supported" in broken["ours_error"]
        assert broken["ours_ms"] is None and broken["ratio"] is None
        assert broken["final_loss_ours"] is None
        assert _finite_positive(broken["pyro_ms"]) and broken["pyro_error"] is None
        assert math.isfinite(broken["final_loss_pyro"])
    assert f"| {BROKEN} | tiny | ERROR: NotImplementedError" in md


def test_guides_pyro_lacks_are_timed_against_the_floor(
    bench_plugin: str, tmp_path: Path
) -> None:
    specs, no_pyro = select_guides([DELTA, NOWHERE])
    assert [s.name for s in specs] == [DELTA, NOWHERE]
    assert list(no_pyro) == [NOWHERE] and "AutoBenchNowhere" in no_pyro[NOWHERE]
    argv = ["--quick", "--guides", f"{NOWHERE},{BATCHED}", "--steps", "2"]
    argv += ["--models", "hierarchical,grouped", "--rounds", "1", "--warmup", "1"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    cells = {(c["guide"], c["model"]): c for c in data["cells"]}
    for key in [(NOWHERE, "hierarchical"), (NOWHERE, "grouped"), (BATCHED, "grouped")]:
        cell = cells[key]
        assert cell["pyro_missing"] and cell["pyro_ms"] is None
        assert _finite_positive(cell["ours_ms"]) and _finite_positive(cell["floor_ms"])
        assert _finite_positive(cell["ours_over_floor"])
        assert cell["not_applicable"] is None
    # A batched guide refuses the hierarchical model: its globals are outside the plate.
    refused = cells[(BATCHED, "hierarchical")]
    assert (
        "ValueError" in refused["not_applicable"]
        and "'loc'" in refused["not_applicable"]
    )
    md = (tmp_path / "bench.md").read_text()
    assert "## Guides Pyro lacks" in md and "Errors:" not in md
    assert f"| {BATCHED} | hierarchical | n/a: ValueError" in md
    assert f"| {BATCHED} | grouped | " in md


def test_cli_rejects_unknown_names(
    bench_plugin: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--quick", "--guides", DELTA, "--models", "nope"]) == 2
    assert main(["--quick", "--guides", "no_such_guide", "--out", str(tmp_path)]) == 2
    assert "unknown benchmark model" in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()


def test_every_back_end_gets_its_own_cell(tmp_path: Path) -> None:
    pytest.importorskip("funsor")
    config = BenchConfig(
        guides=("auto_gaussian",), models=("tiny",), quick=True, steps=1, rounds=1
    )
    result = run_benchmarks(config)
    cells = {c.backend: c for c in result.cells}
    assert list(cells) == list(registry.info("auto_gaussian").backends)
    for backend, cell in cells.items():
        assert cell.ours.error is None and cell.pyro.error is None, backend
    # Pyro has dense and funsor: the same back end on both sides, the same run.
    for backend in ("dense", "funsor"):
        ours, pyros = cells[backend].ours, cells[backend].pyro
        assert ours.final_loss() == pytest.approx(pyros.final_loss(), rel=1e-5)
    assert main(["--quick", "--guides", "auto_gaussian", "--models", "tiny",
                 "--steps", "1", "--rounds", "1", "--backend", "sparse",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    assert "| auto_gaussian (sparse) | tiny |" in (tmp_path / "bench.md").read_text()


def test_a_guide_that_needs_arguments_gets_the_same_ones_on_both_sides() -> None:
    config = BenchConfig(
        guides=("auto_normalizing_flow",),
        models=("tiny",),
        quick=True,
        steps=2,
        rounds=1,
    )
    (cell,) = run_benchmarks(config).cells
    assert cell.ours.error is None and cell.pyro.error is None
    # the same flow from the same seed: the same fit on both sides
    assert cell.ours.final_loss() == pytest.approx(cell.pyro.final_loss(), rel=1e-5)


def test_engine_columns_time_our_guide_under_fit_engines(tmp_path: Path) -> None:
    argv = ["--quick", "--guides", "auto_normal", "--models", "tiny", "--steps", "2"]
    argv += ["--rounds", "1", "--warmup", "3", "--engines", "recorded,eager"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    (cell,) = data["cells"]
    for engine in ("recorded", "eager"):
        side = cell["engines"][engine]
        assert side["error"] is None and side["ran"] == engine
        assert _finite_positive(side["ms"]) and len(side["steps_ms"]) == 2
        # the same seed and optimizer settings: the same losses as SVI.step
        assert side["final_loss"] == pytest.approx(cell["final_loss_ours"], rel=1e-4)
    md = (tmp_path / "bench.md").read_text()
    assert "| recorded ms/step | eager ms/step | ratio |" in md
    with pytest.raises(ValueError, match="engines must be among"):
        BenchConfig(engines=("fast",)).resolved()


def test_the_pyro_jit_column_times_pyros_guide_under_jit_trace_elbo(tmp_path: Path):
    argv = ["--quick", "--guides", "auto_normal", "--models", "tiny", "--steps", "2"]
    argv += ["--rounds", "1", "--warmup", "3", "--engines", "pyro_jit"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    (cell,) = json.loads((tmp_path / "bench.json").read_text())["cells"]
    side = cell["engines"]["pyro_jit"]
    assert side["error"] is None and _finite_positive(side["ms"])
    # Pyro's guide on the same data (the traced first call draws differently)
    assert math.isfinite(side["final_loss"]) and side["ran"] is None
    assert (
        "pyro_jit is Pyro's guide under JitTrace_ELBO"
        in (tmp_path / "bench.md").read_text()
    )


# -- the distributed benchmark -------------------------------------------------


def test_the_distributed_benchmark_times_1_and_2_processes(tmp_path: Path) -> None:
    from benchmarks.distributed import DistConfig, run, to_markdown

    config = DistConfig(rows=2000, features=3, batch=100, steps=3, warmup=2)
    report = run(dataclasses.replace(config, worlds=(1, 2), timeout=120))
    rows = report["rows"]
    assert list(rows) == ["1 process", "2 processes"]
    for figures in rows.values():
        assert figures["engine"] == "recorded", figures["reason"]
        assert figures["ms_per_step"] > 0 and figures["reduce_ms"] >= 0
    assert rows["2 processes"]["reason"].startswith("distributed over 2 processes")
    assert rows["2 processes"]["alone_ms"] > 0
    assert rows["1 process"]["speedup"] == 1.0
    table = to_markdown(report)
    assert "| 2 processes | recorded |" in table and "2,000 rows" in table


# -- memory, NumPyro and end-to-end (fresh processes) ---------------------------


def test_peak_meter_sees_an_allocation_between_start_and_stop() -> None:
    meter = PeakMeter()
    meter.baseline()
    meter.start()
    block = torch.ones(64 * 2**20 // 4, dtype=torch.float32)  # 64 MiB, touched
    meter.stop()
    del block
    mem = meter.as_dict()
    if not mem["reset"]:
        pytest.skip("the peak RSS cannot be reset on this system")
    assert 60 <= mem["step_mib"] <= 80 and mem["peak_mib"] >= mem["step_mib"]


def test_memory_is_measured_for_every_side(tmp_path: Path) -> None:
    config = BenchConfig(
        guides=("auto_normal",), models=("tiny",), quick=True, steps=2, rounds=1,
        warmup=2, engines=("recorded",), memory=True,
    )  # fmt: skip
    result = run_benchmarks(config)
    (cell,) = result.cells
    assert set(cell.memory) == {"ours", "pyro", "recorded"}
    for side, mem in cell.memory.items():
        assert mem.get("error") is None, (side, mem)
        assert mem["peak_mib"] >= 0 and mem["base_mib"] > 50  # torch is loaded
        assert mem["machinery_mib"] >= 0  # paid on the tiny model first
    assert cell.memory["recorded"]["ran"] == "recorded"
    write_reports(result, tmp_path)
    md = (tmp_path / "bench.md").read_text()
    assert "## Memory (peak MiB)" in md and "| recorded MiB | recorded/ours |" in md
    assert "| recorded/ours process |" in md


def test_the_memory_table_gives_the_whole_process_ratio_too() -> None:
    from benchmarks.sections import memory_table

    def side(base, peak):
        return {"base_mib": base, "peak_mib": peak, "machinery_mib": 1.0}

    cell = {"guide": "auto_normal", "model": "tiny", "backend": None}
    cell["memory"] = {"ours": side(300.0, 1.0), "compiled": side(400.0, 2.0)}
    data = {"cells": [cell], "config": {"engines": ["compiled"]}}
    row = memory_table(data)[-1].strip("| ").split(" | ")
    assert row[-2:] == ["2.00", "1.34"]  # the step's own 2x; 402/301 for the process


def test_end_to_end_fits_ours_and_pyros_and_replays_the_convergence_rule(
    tmp_path: Path,
) -> None:
    config = BenchConfig(
        guides=(), models=("tiny",), quick=True, end_to_end=True, e2e_steps=120
    )
    result = run_benchmarks(config)
    (row,) = result.end_to_end
    assert (row["guide"], row["model"]) == ("auto_normal", "tiny")
    for side in ("ours", "ours_conv", "pyro"):
        assert row[side].get("error") is None, (side, row[side])
        assert _finite_positive(row[side]["seconds"])
        assert math.isfinite(row[side]["final_loss"])
    assert row["ours"]["steps"] == row["pyro"]["steps"] == 120
    assert row["ours"]["engine"] in ("eager", "recorded", "compiled")
    # The converged fit stops where the rule fires on the full run's losses.
    at = row["ours"]["converged_at"]
    assert row["ours_conv"]["steps"] == (at or 120)
    write_reports(result, tmp_path)
    assert "## End to end" in (tmp_path / "bench.md").read_text()


def test_numpyro_column(tmp_path: Path) -> None:
    pytest.importorskip("numpyro")
    argv = ["--quick", "--guides", "auto_normal,auto_normal_messenger", "--models"]
    argv += ["tiny", "--steps", "2", "--rounds", "1", "--numpyro"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    cells = {
        c["guide"]: c
        for c in json.loads((tmp_path / "bench.json").read_text())["cells"]
    }
    side = cells["auto_normal"]["numpyro"]
    assert side.get("error") is None and _finite_positive(side["ms"])
    assert math.isfinite(side["final_loss"])
    assert cells["auto_normal_messenger"]["numpyro"] is None  # NumPyro lacks it
    md = (tmp_path / "bench.md").read_text()
    assert "numpyro ms/step" in md and "(ours/np " in md


def test_without_numpyro_the_column_is_omitted_with_a_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(probes, "numpyro_missing", lambda: "numpyro is not installed")
    config = BenchConfig(
        guides=("auto_normal",), models=("tiny",), quick=True, steps=1, rounds=1,
        numpyro=True,
    )  # fmt: skip
    result = run_benchmarks(config)
    assert result.cells[0].numpyro is None
    md = to_markdown(result)
    assert "No numpyro column: numpyro is not installed." in md
    assert "numpyro ms/step" not in md


def test_the_loops_bench_runs_both_sides_on_the_same_draws(tmp_path):
    from benchmarks import loops

    report = loops.main(
        ["--rows", "300", "--epochs", "1", "--batch", "100", "--guides",
         "AutoNormal", "--out", str(tmp_path)]
    )  # fmt: skip
    assert set(report["results"]) == set(loops.LOOPS)
    for cells in report["results"].values():
        cell = cells["AutoNormal"]
        assert cell["ours"]["loss"] == pytest.approx(cell["pyro"]["loss"], rel=1e-4)
        assert cell["ratio"] > 0
    assert (tmp_path / "loops.md").read_text().startswith("# The loops")


def test_the_amortized_bench_reports_memory_time_and_elbo(tmp_path):
    from benchmarks import amortized

    report = amortized.main(
        ["--rows", "2000", "--latent", "2", "--batch", "200", "--epochs", "1",
         "--out", str(tmp_path)]
    )  # fmt: skip
    results = report["results"]
    ours, theirs = results["AutoAmortizedNormal"], results["AutoNormal"]
    assert ours["param_bytes"] < theirs["param_bytes"]
    for side in (ours, theirs):
        assert side["elbo_per_row"] <= side["log_evidence_per_row"] + 0.05
    assert set(results["ratios"]) == {"memory", "epoch_time", "elbo_gap"}
    assert (tmp_path / "amortized.md").read_text().startswith("# Amortized")


def test_the_short_fit_bench_times_whole_processes(tmp_path, monkeypatch):
    from benchmarks import short_fit

    monkeypatch.setattr(short_fit, "_once", lambda code: 1.0 + ("fit" in code))
    report = short_fit.main(["--repeats", "1", "--out", str(tmp_path)])
    ratios = {side: r["ratio"] for side, r in report["results"].items()}
    assert ratios["pyro"] == 1.0 and ratios["fit_auto"] == 2.0
    assert (tmp_path / "short_fit.md").read_text().startswith("# Short fits")
