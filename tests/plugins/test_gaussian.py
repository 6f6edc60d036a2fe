"""AutoGaussian: differential tests against pyro.infer.autoguide.AutoGaussian,
back-end dispatch through the registry, and the errors a user can act on."""

from __future__ import annotations

import sys

import pyro
import pyro.distributions as dist
import pyro.infer.autoguide as oracle
import pytest
import torch
from oracle import DATA, MODELS, assert_same_runs, run_svi
from pyro import poutine
from pyro.infer import JitTrace_ELBO, Predictive, Trace_ELBO, TraceGraph_ELBO

import guide_core
from guide_core import (
    BackendSpec,
    MissingExtraError,
    UnknownBackendError,
    hookimpl,
    registry,
)
from guide_core.core.dependencies import model_dependencies

AutoGaussian = guide_core.AutoGaussian
ORACLE_BACKENDS = ["dense", "funsor"]


def _ours(backend):
    return lambda model: AutoGaussian(model, backend=backend)


def _pyros(backend):
    return lambda model: oracle.AutoGaussian(model, backend=backend)


CASES = [("dense", name) for name in sorted(MODELS)] + [
    ("funsor", "plated"),
    ("funsor", "scalar"),
    ("funsor", "vector"),
    pytest.param("funsor", "constrained", marks=pytest.mark.slow),  # ~30 s
]


@pytest.mark.parametrize("backend, name", CASES)
def test_matches_pyro_parameters_losses_and_median(backend, name):
    model = MODELS[name]
    ours = run_svi(_ours(backend), model, DATA, levels=None)
    pyros = run_svi(_pyros(backend), model, DATA, levels=None)
    assert type(ours.guide).__name__ == type(pyros.guide).__name__
    assert_same_runs(ours, pyros)


@pytest.mark.parametrize("backend", ORACLE_BACKENDS)
def test_sites_and_param_names_are_pyros(backend):
    model = MODELS["constrained"]
    pyro.set_rng_seed(0)
    ours = poutine.trace(AutoGaussian(model, backend=backend)).get_trace(DATA)
    pyro.set_rng_seed(0)
    theirs = poutine.trace(oracle.AutoGaussian(model, backend=backend)).get_trace(DATA)
    assert list(ours.nodes) == list(theirs.nodes)
    for name in theirs.stochastic_nodes:
        assert ours.nodes[name]["infer"] == theirs.nodes[name]["infer"]
    assert set(ours.param_nodes) == set(theirs.param_nodes)
    assert f"_AutoGaussian{backend.capitalize()}_latent" in ours.nodes


@pytest.mark.parametrize("backend", ORACLE_BACKENDS)
def test_jit_matches_pyro(backend):
    model = MODELS["plated"]
    ours = run_svi(_ours(backend), model, DATA, elbo=JitTrace_ELBO(), levels=None)
    pyros = run_svi(_pyros(backend), model, DATA, elbo=JitTrace_ELBO(), levels=None)
    assert_same_runs(ours, pyros)


@pytest.mark.parametrize("elbo", [JitTrace_ELBO, TraceGraph_ELBO])
@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_same_loss_under_jit_and_tracegraph(backend, elbo):
    model = MODELS["plated"]
    guide = AutoGaussian(model, backend=backend)
    guide(DATA)
    other = elbo()
    other.loss(model, guide, DATA)  # a JIT ELBO compiles on its first call
    pyro.set_rng_seed(1)
    expected = Trace_ELBO().loss(model, guide, DATA)
    pyro.set_rng_seed(1)
    assert other.loss(model, guide, DATA) == pytest.approx(expected, rel=1e-6)


def _bounded_model(data):
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("groups", 2, dim=-1):
        frac = pyro.sample("frac", dist.Beta(2.0, 2.0))
        pyro.sample("obs", dist.Normal(frac, scale), obs=data[:2])


@pytest.mark.parametrize("backend", ["dense", "funsor", "sparse"])
def test_quantiles_bracket_the_median(backend):
    run = run_svi(_ours(backend), _bounded_model, DATA, steps=3)
    for name, median in run.median.items():
        lo, mid, hi = run.quantiles[name]
        torch.testing.assert_close(mid, median, rtol=1e-4, atol=1e-5)
        assert (lo < mid).all() and (mid < hi).all()


@pytest.mark.parametrize("backend", ["dense", "funsor", "sparse"])
def test_predictive_and_vectorized_particles(backend):
    model = MODELS["plated"]
    guide = AutoGaussian(model, backend=backend)
    elbo = pyro.infer.Trace_ELBO(
        num_particles=3, vectorize_particles=True, max_plate_nesting=2
    )
    loss = elbo.loss(model, guide, DATA)
    assert torch.isfinite(torch.tensor(loss))
    samples = Predictive(model, guide=guide, num_samples=4)(DATA)
    assert samples["mu"].shape == (4, 2, 1)


# -- dispatch through the registry -----------------------------------------------


@pytest.mark.parametrize("backend", ["dense", "funsor", "sparse"])
def test_backend_picks_the_class(backend):
    cls = registry.backend(backend).factory
    guide = AutoGaussian(MODELS["scalar"], backend=backend)
    assert type(guide) is cls and isinstance(guide, AutoGaussian)
    made = registry.make("auto_gaussian", MODELS["scalar"], backend=backend)
    assert type(made) is cls
    assert getattr(guide_core, cls.__name__) is cls
    assert type(AutoGaussian(MODELS["scalar"])).__name__ == "AutoGaussianDense"


def test_unknown_backend_lists_the_installed_ones():
    with pytest.raises(UnknownBackendError) as info:
        AutoGaussian(MODELS["scalar"], backend="sprase")
    message = str(info.value)
    assert "'sprase' not found" in message and "did you mean 'sparse'" in message
    assert "installed back ends: dense, funsor, sparse" in message
    with pytest.raises(UnknownBackendError, match="installed back ends"):
        registry.make("auto_gaussian", MODELS["scalar"], backend="nope")


def test_backend_given_to_the_wrong_class_is_an_error():
    dense = registry.backend("dense").factory
    with pytest.raises(ValueError, match=r"AutoGaussian\(model, backend='sparse'\)"):
        dense(MODELS["scalar"], backend="sparse")
    dense(MODELS["scalar"], backend="dense")  # its own name is fine


def test_init_scale_is_checked():
    with pytest.raises(ValueError, match="'init_scale' must be > 0"):
        AutoGaussian(MODELS["scalar"], init_scale=-1.0)


def test_missing_funsor_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "funsor", None)
    for build in [
        lambda: AutoGaussian(MODELS["scalar"], backend="funsor"),
        lambda: registry.make("auto_gaussian", MODELS["scalar"], backend="funsor"),
        lambda: registry.backend("funsor").factory(MODELS["scalar"]),
    ]:
        with pytest.raises(
            MissingExtraError, match=r"pip install 'guide-core\[funsor\]'"
        ):
            build()
    AutoGaussian(MODELS["scalar"], backend="sparse")(DATA)  # others still work


class _Plugin:
    """A third-party back end: the sparse one under another name, subclassed."""

    class AutoGaussianMine(registry.backend("sparse").factory):
        pass

    @staticmethod
    @hookimpl
    def register_gaussian_backends(register):
        register(
            BackendSpec(
                name="mine",
                factory=_Plugin.AutoGaussianMine,
                summary="A test back end.",
            )
        )


def test_third_party_backend_is_usable_by_name():
    name = registry.register(_Plugin(), name="test-gaussian-mine")
    try:
        assert "mine" in registry.backends()
        guide = AutoGaussian(MODELS["plated"], backend="mine")
        assert type(guide) is _Plugin.AutoGaussianMine
        made = registry.make("auto_gaussian", MODELS["plated"], backend="mine")
        trace = poutine.trace(made).get_trace(DATA)
        assert "_AutoGaussianMine_latent" in trace.nodes
        ours = run_svi(_ours("mine"), MODELS["plated"], DATA, steps=3, levels=None)
        ref = run_svi(_ours("sparse"), MODELS["plated"], DATA, steps=3, levels=None)
        torch.testing.assert_close(torch.tensor(ours.losses), torch.tensor(ref.losses))
    finally:
        registry.unregister(name)
    with pytest.raises(UnknownBackendError):
        AutoGaussian(MODELS["plated"], backend="mine")


def test_shape_mismatch_names_the_site():
    def model():
        pyro.sample("x", dist.Normal(torch.zeros(3), 1.0))  # no plate, no to_event

    with pytest.raises(ValueError, match="site 'x' has batch shape"):
        AutoGaussian(model)()


def _reference_draw(values, q, noise, cells, n):
    """DenseDraw by plain autograd (torch's Cholesky backward)."""
    flipped = values.new_zeros(n * n).index_add(0, cells, values).reshape(n, n)
    tril = torch.linalg.cholesky(flipped)
    mean = torch.cholesky_solve(q.unsqueeze(-1), tril).squeeze(-1)
    x = mean + torch.linalg.solve_triangular(tril.mT, noise.mT, upper=True).mT
    return x, tril.diagonal().log().sum()


@pytest.mark.parametrize(
    "hub_min, dense_plan",
    # hubs everywhere (dense plan, and by hubs) / some / none
    [(1, True), (1, False), (16, False), (10**9, None)],
)
@pytest.mark.parametrize("draws", [1, 3])
@pytest.mark.parametrize("size", [20, 150])  # 150: inverted by blocks
def test_dense_draw_gradient_is_autograds(hub_min, dense_plan, draws, size):
    from guide_plugins.gaussian.precision_mvn import CellPlan, DenseDraw

    def model():
        g = pyro.sample("g", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("i", size):
            x = pyro.sample("x", dist.Normal(g[0], 1.0))
            pyro.sample("y", dist.Normal(x + g[1], 1.0), obs=torch.zeros(size))
        pyro.sample("t", dist.Normal(x[0] + x[1], 1.0))

    dense = AutoGaussian(model, backend="dense")
    dense()
    for p in dense.parameters():
        p.data.add_(0.3 * torch.randn_like(p))
    layout = dense._dense_layout
    mvn = layout.mvn(dense._factor_params)
    values = mvn._values.detach().double().requires_grad_()
    q = mvn._info.detach().double().flip(-1).requires_grad_()
    n = q.numel()
    noise = torch.randn(draws, n, dtype=values.dtype)
    grad_x, grad_hld = torch.randn(draws, n, dtype=values.dtype), 0.7
    plan = CellPlan(mvn._cells, n, hub_min=hub_min, dense=dense_plan)
    assert plan.dense == bool(dense_plan)
    outs = {
        "ours": DenseDraw.apply(values, q, noise, mvn._cells, plan),
        "ref": _reference_draw(values, q, noise, mvn._cells, n),
    }
    grads = {}
    for key, (x, hld) in outs.items():
        loss = (x * grad_x).sum() + grad_hld * hld
        grads[key] = torch.autograd.grad(loss, [values, q])
    torch.testing.assert_close(outs["ours"][0], outs["ref"][0])
    for ours, ref in zip(grads["ours"], grads["ref"]):
        torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 7, 64, 65, 130, 301])
def test_blocked_triangular_inverse_is_the_solves(n, dtype):
    from guide_plugins.gaussian.triangular import upper_triangular_inverse

    a = torch.randn(2, n, n, dtype=torch.float64)
    factor = torch.linalg.cholesky(a @ a.mT / n + 0.1 * torch.eye(n, dtype=a.dtype))
    upper = (factor.mT + torch.randn(2, n, n, dtype=a.dtype).tril(-1)).to(dtype)
    exact = torch.linalg.solve_triangular(
        upper.double(), torch.eye(n, dtype=torch.float64), upper=True
    )
    ours = upper_triangular_inverse(upper, block=16)
    assert ours.dtype == dtype and ours.shape == (2, n, n)
    assert torch.equal(ours.tril(-1), torch.zeros_like(ours))  # the strict lower part
    solve = torch.linalg.solve_triangular(upper, torch.eye(n, dtype=dtype), upper=True)
    scale = exact.abs().amax((-2, -1), keepdim=True)
    err = ((ours.double() - exact).abs() / scale).amax()
    err_solve = ((solve.double() - exact).abs() / scale).amax()
    assert err <= 10 * err_solve + 10 * torch.finfo(dtype).eps


def _package_imports() -> dict[str, set[str]]:
    """``{module: modules of the gaussian package it imports}``, counting the
    imports inside functions."""
    import ast
    from pathlib import Path

    import guide_plugins.gaussian as package

    root = Path(package.__file__).parent
    graph = {}
    for path in root.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module is not None:
                    found.add(node.module.split(".")[0])
                else:  # from . import a, b
                    found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                prefix = "guide_plugins.gaussian."
                if node.module.startswith(prefix):
                    found.add(node.module[len(prefix) :].split(".")[0])
        graph[path.stem] = found
    return graph


def test_gaussian_package_has_no_import_cycle():
    graph = _package_imports()
    done, active = set(), []

    def visit(module):
        if module in active:
            cycle = active[active.index(module) :] + [module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done or module not in graph:
            return
        active.append(module)
        for other in sorted(graph[module]):
            visit(other)
        active.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert "dense_layout" in graph["base"]  # the dense summaries' own module


# -- latents whose Exponential / HalfCauchy parameter is another latent ----------


def prior_dependencies(model, args=(), kwargs=None):
    """The core's probe, as AutoGaussian reads it."""
    return model_dependencies(model, args, kwargs)["prior_dependencies"]


def _exponential_model(data):
    s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
    x = pyro.sample("x", dist.Exponential(s))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(x, 1.0), obs=data)


def _half_cauchy_model(data):
    s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
    t = pyro.sample("t", dist.HalfCauchy(s))
    with pyro.plate("data", len(data)):
        x = pyro.sample("x", dist.Exponential(s))
        u = pyro.sample("u", dist.HalfCauchy(t))
        pyro.sample("obs", dist.Normal(x + u, 1.0), obs=data)


POSITIVE = torch.tensor([0.5, 1.5, 0.2, 2.0])
RATE_MODELS = {"exponential": _exponential_model, "half_cauchy": _half_cauchy_model}


def test_dependency_probe_sees_through_a_drawn_rate():

    deps = prior_dependencies(_half_cauchy_model, (POSITIVE,))
    assert deps == {
        "s": {"s": set()},
        "t": {"t": set(), "s": set()},
        "x": {"x": set(), "s": set()},
        "u": {"u": set(), "t": set()},
        "obs": {"obs": set(), "x": set(), "u": set()},
    }
    pyro.set_rng_seed(0)
    torch.rand(())
    expected = torch.rand(())
    pyro.set_rng_seed(0)
    torch.rand(())
    prior_dependencies(_half_cauchy_model, (POSITIVE,))  # no draw from the stream
    assert torch.rand(()) == expected


@pytest.mark.parametrize("name", sorted(MODELS))
def test_dependency_probe_agrees_with_pyros_elsewhere(name):
    from pyro.infer.inspect import get_dependencies

    expected = get_dependencies(MODELS[name], (DATA,))["prior_dependencies"]
    assert prior_dependencies(MODELS[name], (DATA,)) == expected


@pytest.mark.parametrize("name", sorted(RATE_MODELS))
@pytest.mark.parametrize("backend", ["dense", "funsor", "sparse"])
def test_fits_a_model_whose_rate_is_a_latent(backend, name):
    model = RATE_MODELS[name]
    run = run_svi(_ours(backend), model, POSITIVE, steps=5)
    assert torch.isfinite(torch.tensor(run.losses)).all()
    shapes = {
        "exponential": {"s": (), "x": ()},
        "half_cauchy": {"s": (), "t": (), "x": (4,), "u": (4,)},
    }[name]
    assert {k: tuple(v.shape) for k, v in run.median.items()} == shapes
    for site, (lo, mid, hi) in run.quantiles.items():
        assert (lo < mid).all() and (mid < hi).all(), site
    assert "x" in run.guide._structure.factors["obs"].upstreams
    samples = Predictive(model, guide=run.guide, num_samples=3)(POSITIVE)
    assert samples["x"].shape[0] == 3 and (samples["x"] > 0).all()


@pytest.mark.parametrize("name", sorted(RATE_MODELS))
@pytest.mark.parametrize("backend", ORACLE_BACKENDS)
def test_rate_models_match_pyro_given_the_right_dependencies(
    monkeypatch, backend, name
):
    # Pyro's probe fails on (exponential) or misreads these models; with our
    # probe's dependencies Pyro's AutoGaussian is the oracle again.

    def probe(model, args=(), kwargs=None, **_):
        return {"prior_dependencies": prior_dependencies(model, args, kwargs)}

    model = RATE_MODELS[name]
    ours = run_svi(_ours(backend), model, POSITIVE, levels=None)
    monkeypatch.setattr("pyro.infer.autoguide.gaussian.get_dependencies", probe)
    pyros = run_svi(_pyros(backend), model, POSITIVE, levels=None)
    assert_same_runs(ours, pyros, rtol=1e-4)  # HalfCauchy draws: losses ~1e5


@pytest.mark.parametrize("shape", [(5, 5), (3, 4, 4), (1, 1)])
def test_the_gram_product_and_its_one_product_gradient_are_autograds(shape):
    from guide_plugins.gaussian.precision_mvn import gram

    a = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(shape[:-1] + (shape[-2],), dtype=torch.float64)
    ours = gram(a)
    torch.testing.assert_close(ours, a @ a.mT)
    (got,) = torch.autograd.grad((ours * weight).sum(), [a])
    (want,) = torch.autograd.grad(((a @ a.mT) * weight).sum(), [a])
    torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(gram, (a,))
