"""The guide-core command line: list, fit, compare, and its one-line errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from guide_core.cli import main

MODEL_FILE = textwrap.dedent(
    """
    import pyro
    import pyro.distributions as dist

    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(w * x, 0.5), obs=y)

    def not_a_model(x, y=None):
        return x

    NOT_CALLABLE = 3
    """
)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "my_models.py").write_text(MODEL_FILE)
    (tmp_path / "broken_models.py").write_text("raise RuntimeError('boom')\n")
    x = np.linspace(-1, 1, 20)
    np.savez(tmp_path / "data.npz", x=x, y=2.0 * x)
    np.savetxt(
        tmp_path / "data.csv",
        np.stack([x, 2 * x], 1),
        delimiter=",",
        header="x,y",
        comments="",
    )
    torch.save({"x": torch.tensor(x), "y": torch.tensor(2 * x)}, tmp_path / "data.pt")
    np.savez(tmp_path / "wrong.npz", z=x)
    return tmp_path


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_prints_families_and_init_strategies(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert "[normal]" in out and "auto_normal" in out
    assert "init strategies (init_loc_fn=<name>):" in out


def test_python_dash_m_runs_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "guide_core", "list"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "auto_normal" in out.stdout


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "must look like MODULE:FUNCTION"),
        ("no_such_module_xyz:model", "cannot import 'no_such_module_xyz'"),
        ("{dir}/broken_models.py:model", "cannot import .*RuntimeError: boom"),
        ("{dir}/my_models.py:missing", "has no function 'missing'"),
        ("{dir}/my_models.py:NOT_CALLABLE", "is a int, not a model function"),
        ("{dir}/my_models.py:not_a_model", "samples no latent site"),
    ],
)
def test_bad_models_are_one_line_errors_with_exit_status_2(
    capsys, files, spec, message
):
    spec = spec.format(dir=files)
    code, _, err = run(capsys, "fit", spec, "--data", str(files / "data.npz"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("guide-core: error: ")
    assert __import__("re").search(message, err)


def test_data_that_do_not_match_the_model_are_a_one_line_error(capsys, files):
    spec = f"{files}/my_models.py:model"
    code, _, err = run(capsys, "fit", spec, "--data", str(files / "wrong.npz"))
    assert code == 2 and "the data do not match model()" in err
    code, _, err = run(capsys, "fit", spec, "--data", str(files / "nope.npz"))
    assert code == 2 and "does not exist" in err
    code, _, err = run(capsys, "fit", spec, "--data", str(files / "my_models.py"))
    assert code == 2 and "must be .npz, .pt or .csv" in err


def test_unknown_guide_is_a_one_line_error(capsys):
    code, _, err = run(capsys, "fit", "--guide", "auto_nromal", "--steps", "2")
    assert code == 2 and "guide 'auto_nromal' not found" in err


def test_debug_shows_the_traceback(files):
    with pytest.raises(Exception, match="must look like MODULE:FUNCTION"):
        main(["--debug", "fit", "no_colon"])


@pytest.mark.parametrize("data", ["data.npz", "data.csv", "data.pt"])
def test_fit_prints_progress_summary_and_khat_and_saves(capsys, files, data):
    pytest.importorskip("guide_core.workflow.fitting.loop")
    spec = f"{files}/my_models.py:model"
    target = files / "fitted.pt"
    code, out, _ = run(
        capsys,
        "fit",
        spec,
        "--data",
        str(files / data),
        "--steps",
        "300",
        "--lr",
        "0.05",
        "--quiet",
        "--khat-samples",
        "100",
        "--save",
        str(target),
    )
    assert code == 0, out
    assert "fitting auto_normal to" in out and "ELBO" in out
    assert "w" in out and "k-hat" in out
    assert target.is_file()


def test_compare_on_the_built_in_example_prints_one_table(capsys):
    pytest.importorskip("guide_core.workflow.fitting.loop")
    code, out, _ = run(
        capsys,
        "compare",
        "--guides",
        "auto_normal,auto_delta",
        "--steps",
        "50",
        "--khat-samples",
        "50",
    )
    assert code == 0
    assert "eight_schools (built-in example)" in out
    header = [line for line in out.splitlines() if line.startswith("guide")]
    assert header and "final ELBO" in header[0] and "k-hat" in header[0]
    assert (
        sum(line.startswith(("auto_normal", "auto_delta")) for line in out.splitlines())
        == 2
    )


def test_data_without_a_model_is_an_error(capsys, files):
    code, _, err = run(capsys, "compare", "--data", str(files / "data.npz"))
    assert code == 2 and "--data needs a model" in err


def test_compare_defaults_to_every_guide_buildable_from_the_model_alone(capsys):
    code, out, _ = run(capsys, "compare", "--steps", "5", "--no-khat")
    assert code == 0
    rows = [line.split()[0] for line in out.splitlines()[3:] if line.strip()]
    assert {"auto_normal", "auto_delta", "auto_multivariate_normal"} <= set(rows)
    assert "auto_normalizing_flow" not in rows  # needs init_transform_fn
    widths = {len(line) for line in out.splitlines()[1:3]}
    assert len(widths) == 1 and widths.pop() < 100  # error rows do not widen it


def test_fit_accepts_the_auto_guide_and_an_init_strategy_by_name(capsys):
    code, out, _ = run(
        capsys,
        "fit",
        "--guide",
        "auto",
        "--init",
        "median",
        "--steps",
        "20",
        "--no-khat",
        "--quiet",
        "--num-samples",
        "20",
    )
    assert code == 0 and "fitting auto to eight_schools" in out


def test_fit_report_writes_index_html_and_its_figures(capsys, tmp_path):
    out_dir = tmp_path / "report"
    code, out, _ = run(
        capsys,
        "fit",
        "--steps",
        "30",
        "--quiet",
        "--khat-samples",
        "50",
        "--num-samples",
        "50",
        "--report",
        str(out_dir),
    )
    assert code == 0 and f"report written to {out_dir / 'index.html'}" in out
    html = (out_dir / "index.html").read_text()
    for name in ("fit_loss.png", "fit_posterior.png", "fit_khat.png"):
        assert (out_dir / name).is_file() and f"src='{name}'" in html


def test_report_without_matplotlib_is_a_one_line_error(capsys, monkeypatch, tmp_path):
    import importlib

    checks = importlib.import_module("guide_core.registry.checks")
    monkeypatch.setattr(checks, "missing_modules", lambda names: ["matplotlib"])
    code, out, err = run(capsys, "fit", "--steps", "5", "--report", str(tmp_path))
    assert code == 2 and "fitting" not in out
    assert err.count("\n") == 1 and "guide-core[plot]" in err


def test_compare_marks_map_guides_and_guides_that_do_not_apply(capsys, tmp_path):
    guides = "auto_normal,auto_delta,auto_laplace_approximation,"
    guides += "auto_hierarchical_normal_messenger"
    code, out, _ = run(
        capsys,
        "compare",
        "--guides",
        guides,
        "--steps",
        "30",
        "--khat-samples",
        "50",
        "--report",
        str(tmp_path),
    )
    assert code == 0
    ranked, points = out.split("MAP / Laplace guides")
    rows = {line.split()[0]: line for line in ranked.splitlines() if line.strip()}
    assert rows["auto_normal"].split()[2] == "*"  # the best (only) ELBO
    assert "auto_delta" not in rows and "auto_laplace_approximation" not in rows
    assert "not applicable: site 'tau'" in rows["auto_hierarchical_normal_messenger"]
    assert "error" not in ranked
    points = {line.split()[0]: line for line in points.splitlines() if line.strip()}
    assert points["auto_delta"].split()[1] == "MAP"
    assert points["auto_laplace_approximation"].split()[1] == "Laplace"
    assert "bad > 0.7" in " ".join(out.split())
    html = (tmp_path / "index.html").read_text()
    assert "compare_forest.png" in html and "compare_loss.png" in html
    assert "not applicable" in html and "auto_normal (best ELBO)" in html


def test_fit_progress_off_a_terminal_is_a_few_lines(capsys):
    code, _, err = run(
        capsys,
        "fit",
        "--steps",
        "500",
        "--tol",
        "1e-12",
        "--no-start",  # the old loop, which --tol keeps going for all 500 steps
        "--no-khat",
        "--num-samples",
        "10",
    )
    assert code == 0
    lines = err.strip().splitlines()
    assert 2 <= len(lines) <= 12 and lines[-1].startswith("fit [")  # the engine
    assert ": 500/500 steps" in lines[-1]
