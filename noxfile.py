"""Nox sessions: the test matrix (device x dtype), lint, docs, slow tests and bench."""

from __future__ import annotations

import shutil

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

TORCH = "torch==2.13.0"  # the CPU build; a looser pin pulls CUDA packages
EXAMPLE_PLUGIN = "./plugins/examples/guide-core-example"
HAS_CUDA = bool(shutil.which("nvidia-smi"))
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])


def _install(session: nox.Session, extras: str = "test") -> None:
    session.install(TORCH)
    session.install("-e", f".[{extras}]", "-e", EXAMPLE_PLUGIN)


@nox.session
@nox.parametrize("dtype", ["float32", "float64"])
@nox.parametrize("device", DEVICES)
def tests(session: nox.Session, device: str, dtype: str) -> None:
    """Run the test suite on one device with one default dtype."""
    _install(session)
    env = {"GUIDE_CORE_TEST_DEVICE": device, "GUIDE_CORE_TEST_DTYPE": dtype}
    session.run("pytest", *session.posargs, env=env)


@nox.session
def slow(session: nox.Session) -> None:
    """Run the slow statistical tests (fits to convergence)."""
    _install(session)
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style with ruff."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx site with warnings as errors."""
    _install(session, "docs")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build"
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Time our guides against pyro.infer.autoguide, and fit on 1 vs 2 processes.

    Every engine's column (recorded, compiled, Pyro's JitTrace_ELBO), memory
    (a fresh process per side), NumPyro's jitted step and end-to-end fits are
    on; the ratios come from one run. Then the posteriordb accuracy table.
    """
    _install(session, "test,bench")
    session.run(
        "python",
        "-m",
        "benchmarks",
        "--memory",
        "--numpyro",
        "--end-to-end",
        "--engines",
        "recorded,compiled,pyro_jit",
        "--out",
        "benchmarks/results",
        *session.posargs,
    )
    session.run("python", "-m", "benchmarks.distributed", "--out", "benchmarks/results")
    # the loops users have: guide_core.SVI and ELBOModule against Pyro's
    session.run("python", "-m", "benchmarks.loops", "--out", "benchmarks/results")
    # short fits, whole processes: never slower than Pyro's loop
    session.run("python", "-m", "benchmarks.short_fit", "--out", "benchmarks/results")
    # amortized (encoder) guides against per-row parameters, in mini-batches
    session.run("python", "-m", "benchmarks.amortized", "--out", "benchmarks/results")
    # accuracy on real posteriors (posteriordb reference draws), every method
    session.run(
        "python",
        "-m",
        "benchmarks.posteriordb",
        "--out",
        "benchmarks/results/posteriordb",
    )
