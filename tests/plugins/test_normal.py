"""AutoNormal: differential tests against pyro.infer.autoguide.AutoNormal."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.infer.autoguide as oracle
import pytest
import torch
from oracle import (
    DATA,
    MODELS,
    assert_same_runs,
    run_svi,
    scalar_model,
    subsample_model,
    subsample_plates,
)
from pyro import poutine
from pyro.infer import (
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    JitTraceGraph_ELBO,
    JitTraceMeanField_ELBO,
    Predictive,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)

import guide_core
from guide_core import AutoGuideList, init_to_value, registry

AutoNormal = guide_core.AutoNormal


@pytest.mark.parametrize("name", sorted(MODELS))
def test_matches_pyro_parameters_losses_median_and_quantiles(name):
    model = MODELS[name]
    ours = run_svi(AutoNormal, model, DATA)
    pyros = run_svi(oracle.AutoNormal, model, DATA)
    assert_same_runs(ours, pyros)


@pytest.mark.parametrize(
    "elbo",
    [
        TraceGraph_ELBO,
        lambda: TraceEnum_ELBO(max_plate_nesting=2),
        JitTrace_ELBO,
        JitTraceGraph_ELBO,
        lambda: JitTraceEnum_ELBO(max_plate_nesting=2),
    ],
    ids=["tracegraph", "traceenum", "jit", "jit_tracegraph", "jit_traceenum"],
)
def test_matches_pyro_under_other_elbos(elbo):
    model = MODELS["plated"]
    ours = run_svi(AutoNormal, model, DATA, elbo=elbo(), steps=10, levels=None)
    pyros = run_svi(oracle.AutoNormal, model, DATA, elbo=elbo(), steps=10, levels=None)
    assert_same_runs(ours, pyros)


def test_sites_and_param_names_are_pyros():
    guide = AutoNormal(MODELS["constrained"])
    ours = poutine.trace(guide).get_trace(DATA)
    theirs = poutine.trace(oracle.AutoNormal(MODELS["constrained"])).get_trace(DATA)
    assert list(ours.stochastic_nodes) == list(theirs.stochastic_nodes)
    for name in theirs.stochastic_nodes:
        assert isinstance(ours.nodes[name]["fn"], type(theirs.nodes[name]["fn"]))
        assert ours.nodes[name]["infer"] == theirs.nodes[name]["infer"]
    assert guide.scale_constraint is oracle.AutoNormal.scale_constraint


def test_trace_mean_field_elbo_uses_the_analytic_kl_for_unconstrained_sites():
    guide = AutoNormal(scalar_model, init_scale=0.5)
    guide(DATA)
    pyro.set_rng_seed(3)
    loss = TraceMeanField_ELBO().loss(scalar_model, guide, DATA)
    pyro.set_rng_seed(3)
    z = poutine.trace(guide).get_trace(DATA).nodes["loc"]["value"]
    q = dist.Normal(*guide._get_loc_and_scale("loc"))
    kl = torch.distributions.kl_divergence(q, dist.Normal(0.0, 2.0))
    expected = -dist.Normal(z, 1.0).log_prob(DATA).sum() + kl
    assert loss == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("elbo", [TraceMeanField_ELBO, JitTraceMeanField_ELBO])
def test_mean_field_loss_is_the_exact_kl_without_monte_carlo_noise(elbo):
    def prior_only():
        pyro.sample("z", dist.Normal(torch.zeros(2), 2.0).to_event(1))

    guide = AutoNormal(prior_only, init_scale=0.5)
    guide()
    q = dist.Normal(*guide._get_loc_and_scale("z")).to_event(1)
    exact = torch.distributions.kl_divergence(
        q, dist.Normal(0.0, 2.0).expand([2]).to_event(1)
    )
    loss = elbo()
    for seed in (1, 2):
        pyro.set_rng_seed(seed)
        assert loss.loss(prior_only, guide) == pytest.approx(exact.item(), rel=1e-5)


def test_trace_mean_field_elbo_keeps_the_log_det_for_constrained_sites():
    def model():
        pyro.sample("s", dist.LogNormal(0.0, 1.0))

    guide = AutoNormal(model, init_scale=0.3)
    guide()
    pyro.set_rng_seed(5)
    mean_field = TraceMeanField_ELBO().loss(model, guide)
    pyro.set_rng_seed(5)
    trace = Trace_ELBO().loss(model, guide)
    assert mean_field == pytest.approx(trace, rel=1e-5)  # same MC estimate


def test_works_with_predictive_block_and_guide_lists():
    model = MODELS["plated"]
    guide = AutoNormal(model)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    svi.step(DATA)
    samples = Predictive(model, guide=guide, num_samples=7)(DATA)
    assert samples["mu"].shape == (7, 2, 1) and samples["tau"].shape == (7, 1, 1)
    blocked = poutine.trace(poutine.block(guide, hide=["tau"])).get_trace(DATA)
    assert "tau" not in blocked.nodes and "mu" in blocked.nodes
    parts = AutoGuideList(model)
    parts.append(AutoNormal(poutine.block(model, expose=["tau"])))
    parts.append(guide_core.AutoDelta(poutine.block(model, hide=["tau"])))
    svi = pyro.infer.SVI(model, parts, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    assert torch.isfinite(torch.tensor(svi.step(DATA)))
    assert set(parts.median(DATA)) == {"tau", "mu"}
    assert parts.quantiles([0.5], DATA)["mu"].shape == (1, 2, 1)


def test_float64_and_to_device(device):
    with torch.device(device):
        data = DATA.to(torch.float64)
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            guide = AutoNormal(MODELS["plated"])
            guide(data)
        finally:
            torch.set_default_dtype(old)
    assert guide.locs.mu.dtype == torch.float64
    guide.to(device)
    assert guide.median(data)["mu"].device.type == torch.device(device).type


def test_state_dict_loads_into_a_fresh_guide_before_any_call():
    model = MODELS["constrained"]
    trained = run_svi(AutoNormal, model, DATA, steps=15, levels=None)
    state = {k: v.clone() for k, v in trained.guide.state_dict().items()}
    pyro.clear_param_store()
    fresh = AutoNormal(model, init_loc_fn=guide_core.init_to_sample)
    fresh.load_state_dict(state)
    median = fresh.median(DATA)
    for name, value in trained.median.items():
        torch.testing.assert_close(median[name], value)


def test_checkpoints_load_between_ours_and_pyros():
    model = MODELS["constrained"]
    trained = run_svi(oracle.AutoNormal, model, DATA, steps=10, levels=None)
    state = {k: v.clone() for k, v in trained.guide.state_dict().items()}
    pyro.clear_param_store()
    ours = AutoNormal(model)
    ours.load_state_dict(state)
    for name, value in trained.median.items():
        torch.testing.assert_close(ours.median(DATA)[name], value)
    pyro.clear_param_store()
    theirs = oracle.AutoNormal(model)
    theirs(DATA)  # Pyro's guide needs a warm-up call first
    theirs.load_state_dict(ours.state_dict())
    for name, value in trained.median.items():
        torch.testing.assert_close(theirs.median(DATA)[name], value)


def test_create_plates_subsampling_matches_pyro_and_keeps_full_size_params():
    data, model, create_plates = torch.randn(8), subsample_model, subsample_plates
    ours = run_svi(lambda m: AutoNormal(m, create_plates=create_plates), model, data)
    pyros = run_svi(
        lambda m: oracle.AutoNormal(m, create_plates=create_plates), model, data
    )
    assert_same_runs(ours, pyros)
    assert ours.guide.locs.x.shape == (8,)


def test_explicit_subsample_of_the_model_is_respected():
    data = torch.randn(6)

    def model(data, idx):
        with pyro.plate("data", 6, subsample=idx):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(x, 0.1), obs=data[idx])

    guide = AutoNormal(model)
    idx = torch.tensor([0, 1])
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    for _ in range(30):
        svi.step(data, idx)
    locs = guide.locs.x.detach()
    assert torch.all(locs[2:] == 0.0)  # never touched: not in the subsample
    assert torch.all((locs[:2] - data[:2]).abs() < data[:2].abs())  # moved to data


def test_registry_make_accepts_init_strategy_names():
    guide = registry.make("auto_normal", scalar_model, init_loc_fn="median")
    assert guide.init_loc_fn is guide_core.init_to_median
    assert registry.info("auto_normal").capabilities.mean_field


# -- bad input -----------------------------------------------------------------


def test_discrete_site_is_an_error_naming_the_site_and_the_fix():
    def model():
        pyro.sample("k", dist.Categorical(torch.ones(3)))

    with pytest.raises(ValueError, match="discrete.*'k'|'k'.*discrete") as err:
        AutoNormal(model)()
    assert "poutine.block(model, hide=['k'])" in str(err.value)


def test_support_without_bijection_is_an_error_naming_the_site():
    def model():
        pyro.sample("dir", dist.ProjectedNormal(torch.ones(3)))

    with pytest.raises(ValueError, match="'dir'.*ProjectedNormalReparam"):
        AutoNormal(model)()

    def cholesky_model():
        base = dist.Normal(torch.zeros(2, 2), 1.0).to_event(2)
        chol = dist.transforms.LowerCholeskyTransform()
        pyro.sample("chol", dist.TransformedDistribution(base, chol))

    with pytest.raises(ValueError, match="site 'chol' has support LowerCholesky"):
        AutoNormal(cholesky_model)()


@pytest.mark.parametrize("bad", [0.0, -0.1])
def test_non_positive_init_scale_is_an_error(bad):
    with pytest.raises(ValueError, match="'init_scale' must be > 0"):
        AutoNormal(scalar_model, init_scale=bad)


def test_init_value_outside_the_support_is_an_error_naming_the_site():
    model = MODELS["constrained"]
    init = init_to_value(values={"scale": torch.tensor(-2.0)})
    with pytest.raises(ValueError, match="outside the support of site 'scale'"):
        AutoNormal(model, init_loc_fn=init)(DATA)


def test_init_value_of_the_wrong_shape_is_an_error_naming_the_site():
    init = init_to_value(values={"w": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"site 'w'.*shape \(3,\)"):
        AutoNormal(MODELS["vector"], init_loc_fn=init)(DATA)


@pytest.mark.slow
def test_fits_the_exact_posterior_of_a_conjugate_normal_model():
    data = torch.tensor([1.5, 2.5, 2.0, 3.0])
    guide = AutoNormal(scalar_model)
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.999})
    svi = pyro.infer.SVI(scalar_model, guide, optim, TraceMeanField_ELBO(10))
    for _ in range(3000):
        svi.step(data)
    precision = 1 / 4.0 + len(data)
    post_loc, post_scale = data.sum() / precision, precision**-0.5
    loc, scale = guide._get_loc_and_scale("loc")
    assert loc.item() == pytest.approx(post_loc.item(), abs=0.02)
    assert scale.item() == pytest.approx(post_scale, rel=0.05)


def _pyro_params(guide, **kwargs):
    return {n: p.detach().clone() for n, p in guide.named_pyro_params(**kwargs)}


@pytest.mark.parametrize("local_params", [False, True])
def test_named_pyro_params_is_pyro_modules_own(local_params):
    """Module-relative names, constrained values, ``prefix`` and ``recurse``."""

    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        pyro.sample("s", dist.LogNormal(0.0, 1.0))

    with pyro.settings.context(module_local_params=local_params):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        theirs = oracle.AutoNormal(model, init_scale=0.3)
        theirs()
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        ours = AutoNormal(model, init_scale=0.3)
        ours()
        for kwargs in ({}, {"prefix": "g"}, {"recurse": False}):
            expected, actual = (
                _pyro_params(theirs, **kwargs),
                _pyro_params(ours, **kwargs),
            )
            assert list(actual) == list(expected)
            for name in expected:
                torch.testing.assert_close(actual[name], expected[name])
        assert "locs.z" in _pyro_params(ours) and "scales.s" in _pyro_params(ours)
        assert (_pyro_params(ours)["scales.s"] > 0).all()  # constrained


@pytest.mark.parametrize("local_params", [False, True])
@pytest.mark.parametrize("vectorize", [False, True])
def test_elbo_module_trains_our_guide_like_pyros(local_params, vectorize):
    """``Trace_ELBO(...)(model, guide)`` is a torch module whose parameters are
    the model's and the guide's ``named_pyro_params`` (Pyro's test_module)."""

    class Model(pyro.nn.PyroModule):
        def __init__(self):
            super().__init__()
            self.loc = torch.nn.Parameter(torch.zeros(2))
            self.z = pyro.nn.PyroSample(
                lambda self: dist.Normal(self.loc, 1.0).to_event(1)
            )

        def forward(self, data):
            loc, log_scale = self.z.unbind(-1)
            with pyro.plate("data"):
                pyro.sample("obs", dist.Cauchy(loc, log_scale.exp()), obs=data)

    with pyro.settings.context(module_local_params=local_params):
        pyro.clear_param_store()
        data = torch.randn(5)
        model = Model()
        model(data)
        guide = AutoNormal(model)
        guide(data)
        elbo = Trace_ELBO(num_particles=2, vectorize_particles=vectorize)(model, guide)
        names = {k.removesuffix("_unconstrained") for k, _ in elbo.named_parameters()}
        assert names == {"model." + k for k, _ in model.named_pyro_params()} | {
            "guide." + k for k, _ in guide.named_pyro_params()
        }
        adam = torch.optim.Adam(elbo.parameters(), lr=0.01)
        before = guide.locs.z.detach().clone()
        for _ in range(3):
            adam.zero_grad()
            elbo(data).backward()
            adam.step()
        assert not torch.equal(guide.locs.z.detach(), before)
        stored = set(pyro.get_param_store().keys())
        assert stored == set() if local_params else stored != set()
