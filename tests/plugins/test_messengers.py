"""Messenger guides: differential tests against pyro.infer.autoguide's messengers."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.infer.autoguide as oracle
import pytest
import torch
from guide_plugins.messengers import regressive
from oracle import DATA, MODELS, assert_same_runs, run_svi, scalar_model
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import Predictive, Trace_ELBO, TraceMeanField_ELBO

import guide_core
from guide_core import AutoGuideList, registry

NAMES = [
    "AutoNormalMessenger",
    "AutoHierarchicalNormalMessenger",
    "AutoRegressiveMessenger",
]


def options(cls_name, model_name, lib):
    """Keyword arguments that both libraries need for a test model."""
    kwargs = {}
    if model_name == "plated":  # HalfCauchy: the default init_to_mean is inf
        kwargs["init_loc_fn"] = lib.init_to_median
    if cls_name == "AutoHierarchicalNormalMessenger":
        # the prior mean is needed; LKJCholesky has none, HalfCauchy's is inf
        kwargs["hierarchical_sites"] = {
            "constrained": ["scale", "probs", "frac", "bound"],
            "plated": ["mu"],
        }.get(model_name)
    return kwargs


def without_median(cls):
    """Pyro's AutoRegressiveMessenger has no median; give run_svi an empty one."""
    if hasattr(cls, "median"):
        return cls
    return type(cls.__name__, (cls,), {"median": lambda self, *args: {}})


def builders(cls_name, model_name):
    ours, theirs = getattr(guide_core, cls_name), getattr(oracle, cls_name)
    theirs = without_median(theirs)
    return (
        lambda m: ours(m, **options(cls_name, model_name, guide_core)),
        lambda m: theirs(m, **options(cls_name, model_name, oracle)),
    )


def assert_same_training(ours, pyros):
    assert sorted(ours.initial) == sorted(pyros.initial)
    for name, value in pyros.initial.items():
        torch.testing.assert_close(ours.initial[name], value)
    torch.testing.assert_close(torch.tensor(ours.losses), torch.tensor(pyros.losses))
    for name, value in pyros.params.items():
        torch.testing.assert_close(ours.params[name], value)


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("cls_name", NAMES[:2])
def test_normal_messengers_match_pyro_params_losses_and_median(cls_name, model_name):
    make_ours, make_theirs = builders(cls_name, model_name)
    model = MODELS[model_name]
    ours = run_svi(make_ours, model, DATA, levels=None)
    pyros = run_svi(make_theirs, model, DATA, levels=None)
    assert_same_runs(ours, pyros)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_regressive_messenger_matches_pyro_params_and_losses(model_name):
    make_ours, make_theirs = builders("AutoRegressiveMessenger", model_name)
    model = MODELS[model_name]
    ours = run_svi(make_ours, model, DATA, levels=None)
    pyros = run_svi(make_theirs, model, DATA, levels=None)
    assert_same_training(ours, pyros)


def test_regressive_median_is_the_affine_map_of_the_prior_median():
    # Pyro's AutoRegressiveMessenger has no median; compute it from its params.
    # tau ~ HalfCauchy(1) has median 1 (log 1 = 0); mu | tau ~ Normal(0, tau)
    # has median 0: so the medians are exp(loc_tau) and loc_mu.
    _, make_theirs = builders("AutoRegressiveMessenger", "plated")
    pyros = run_svi(make_theirs, MODELS["plated"], DATA, levels=None)
    ours = guide_core.AutoRegressiveMessenger(MODELS["plated"])
    ours.load_state_dict(pyros.guide.state_dict())
    median = ours.median(DATA)
    torch.testing.assert_close(median["tau"], pyros.params["locs.tau"].exp())
    torch.testing.assert_close(median["mu"], pyros.params["locs.mu"])
    q = ours.quantiles([0.25, 0.5], DATA)
    torch.testing.assert_close(q["tau"][1], median["tau"])
    # the quartile of HalfCauchy(1) is tan(pi / 8)
    quartile = math.log(math.tan(math.pi / 8))
    expected = pyros.params["locs.tau"] + pyros.params["scales.tau"] * quartile
    torch.testing.assert_close(q["tau"][0], expected.exp())


@pytest.mark.parametrize("cls_name", NAMES[:2])
def test_normal_quantiles_push_normal_quantiles_through_the_support(cls_name):
    make_ours, _ = builders(cls_name, "constrained")
    run = run_svi(make_ours, MODELS["constrained"], DATA, steps=5)
    guide, levels = run.guide, torch.tensor([0.1, 0.5, 0.9])
    z = torch.distributions.Normal(0.0, 1.0).icdf(levels)
    for name in ("scale", "frac"):  # no upstream sites: the prior mean is fixed
        loc, scale = getattr(guide.locs, name), getattr(guide.scales, name)
        if cls_name == "AutoHierarchicalNormalMessenger":
            prior = dict(scale=dist.LogNormal(0.0, 1.0), frac=dist.Beta(2.0, 2.0))
            transform = torch.distributions.biject_to(prior[name].support)
            loc = loc + getattr(guide.weights, name) * transform.inv(prior[name].mean)
        transform = torch.distributions.biject_to(
            constraints.positive if name == "scale" else constraints.unit_interval
        )
        expected = transform(loc.detach() + scale.detach() * z)
        torch.testing.assert_close(run.quantiles[name], expected)
    assert run.quantiles["probs"].shape == (3, 3)
    assert set(run.quantiles) == {"scale", "probs", "frac", "corr", "bound"}


def test_regressive_quantiles_of_a_prior_without_icdf_are_a_fixed_seed_estimate():
    def model():
        pyro.sample("g", dist.Gamma(2.0, 2.0))

    guide = guide_core.AutoRegressiveMessenger(model, init_scale=1.0)
    pyro.set_rng_seed(7)
    before = torch.rand(())
    pyro.set_rng_seed(7)
    q = guide.quantiles([0.25, 0.5, 0.75])["g"]
    assert torch.equal(torch.rand(()), before)  # the global RNG is untouched
    assert torch.equal(guide.quantiles([0.25, 0.5, 0.75])["g"], q)
    # init_scale=1: the posterior is the prior; Gamma(2, 2) quartiles
    expected = torch.tensor([0.4806, 0.8392, 1.3463])
    torch.testing.assert_close(q, expected, rtol=0.04, atol=0.0)


# -- the subclassing examples of the reference ---------------------------------


def abc_model(data):
    a = pyro.sample("a", dist.Normal(0, 1))
    b = pyro.sample("b", dist.Normal(0, 1))
    c = pyro.sample("c", dist.Normal(a + b, 1))
    pyro.sample("obs", dist.Normal(c, 1), obs=data)


def my_guide_messenger(base):
    class MyGuideMessenger(base):
        def get_posterior(self, name, prior):
            if name == "c":
                bias = pyro.param("c_bias", lambda: torch.zeros(()))
                weight = pyro.param(
                    "c_weight", lambda: torch.ones(()), constraint=constraints.positive
                )
                scale = pyro.param(
                    "c_scale", lambda: torch.ones(()), constraint=constraints.positive
                )
                a = self.upstream_value("a")
                b = self.upstream_value("b")
                loc = bias + weight * (a + b)
                return dist.Normal(loc, scale)
            return super().get_posterior(name, prior)

    return MyGuideMessenger


def my_guide_messenger_v2(base):
    class MyGuideMessenger_v2(base):  # noqa: N801 (the reference's name)
        def get_posterior(self, name, prior):
            if name == "c":
                bias = pyro.param("c_bias", lambda: torch.zeros(()))
                scale = pyro.param(
                    "c_scale", lambda: torch.ones(()), constraint=constraints.positive
                )
                weight = pyro.param(
                    "c_weight", lambda: torch.ones(()), constraint=constraints.positive
                )
                loc = bias + weight * prior.loc
                return dist.Normal(loc, scale)
            return super().get_posterior(name, prior)

    return MyGuideMessenger_v2


@pytest.mark.parametrize("example", [my_guide_messenger, my_guide_messenger_v2])
def test_reference_subclass_examples_match_pyro(example):
    data = torch.tensor(1.5)
    ours = run_svi(example(guide_core.AutoNormalMessenger), abc_model, data)
    pyros = run_svi(example(oracle.AutoNormalMessenger), abc_model, data, levels=None)
    assert {"c_bias", "c_weight", "c_scale", "locs.a"} <= set(ours.params)
    # Pyro's median samples an overridden site; ours takes its median
    assert_same_runs(ours, pyros, skip_median=("c",))
    a, b = ours.median["a"], ours.median["b"]
    params = ours.params  # both examples: c's loc is bias + weight * (a + b)
    expected = params["c_bias"] + params["c_weight"] * (a + b)
    torch.testing.assert_close(ours.median["c"], expected)
    assert ours.quantiles["c"].shape == (3,)


def regressive_example(base):
    class MyGuideMessenger(base):
        def get_posterior(self, name, prior):
            if name == "x":
                # the reference's example, its misplaced parenthesis fixed and
                # event_dim read as the property it is
                loc = pyro.param("x_loc", lambda: torch.zeros(prior.shape()))
                scale = pyro.param(
                    "x_scale",
                    lambda: torch.ones(prior.shape()),
                    constraint=constraints.positive,
                )
                return dist.Normal(loc, scale).to_event(prior.event_dim)
            return super().get_posterior(name, prior)

    return MyGuideMessenger


def xy_model(data):
    x = pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    y = pyro.sample("y", dist.LogNormal(x.sum(), 1.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(0.0, y), obs=data)


def test_reference_regressive_subclass_example_matches_pyro():
    ours = run_svi(
        regressive_example(guide_core.AutoRegressiveMessenger), xy_model, DATA
    )
    theirs = regressive_example(without_median(oracle.AutoRegressiveMessenger))
    pyros = run_svi(theirs, xy_model, DATA, levels=None)
    assert {"x_loc", "x_scale", "locs.y", "scales.y"} == set(ours.params)
    assert_same_training(ours, pyros)
    torch.testing.assert_close(ours.median["x"], ours.params["x_loc"])
    # y | x ~ LogNormal(sum x, 1): median exp(sum x), unconstrained sum x
    x_sum = ours.median["x"].sum()
    expected = (ours.params["locs.y"] + ours.params["scales.y"] * x_sum).exp()
    torch.testing.assert_close(ours.median["y"], expected)


# -- hierarchical beats mean field ------------------------------------------------

GROUP_DATA = torch.tensor([3.2, 2.6, 3.9, 2.8, 3.4, 3.1])


def group_model(data):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    with pyro.plate("groups", len(data)):
        x = pyro.sample("x", dist.Normal(mu, 0.3))
        pyro.sample("obs", dist.Normal(x, 1.0), obs=data)


def group_log_evidence(data):
    n = len(data)
    cov = 25.0 * torch.ones(n, n) + (0.09 + 1.0) * torch.eye(n)
    return dist.MultivariateNormal(torch.zeros(n), cov).log_prob(data)


def test_hierarchical_family_holds_the_exact_posterior_of_a_group_model():
    # x_i | mu, data is Normal((mu / 0.09 + d_i) / p, p^-1/2), p = 1/0.09 + 1:
    # loc + weight * prior.mean with weight = (1/0.09) / p represents it, so
    # at these parameters the ELBO is the log evidence for every draw.
    data, n = GROUP_DATA, len(GROUP_DATA)
    p = 1 / 0.09 + 1
    mu_precision = 1 / 25.0 + n / 1.09
    state = {
        "locs.mu_unconstrained": (data.sum() / 1.09) / mu_precision,
        "scales.mu_unconstrained": torch.tensor(mu_precision**-0.5).log(),
        "weights.mu_unconstrained": torch.tensor(0.0),
        "locs.x_unconstrained": data / p,
        "scales.x_unconstrained": torch.full((n,), p**-0.5).log(),
        "weights.x_unconstrained": torch.full((n,), (1 / 0.09) / p).log(),
    }
    guide = guide_core.AutoHierarchicalNormalMessenger(group_model)
    guide.load_state_dict(state)  # before any call
    evidence = group_log_evidence(data)
    for seed in range(3):
        pyro.set_rng_seed(seed)
        loss = Trace_ELBO().loss(group_model, guide, data)
        assert loss == pytest.approx(-evidence.item(), abs=1e-3)
    # the mean-field guide at the exact marginals pays a KL divergence
    normal = guide_core.AutoNormalMessenger(group_model)
    normal_state = {k: v for k, v in state.items() if not k.startswith("weights")}
    weight = (1 / 0.09) / p
    normal_state["locs.x_unconstrained"] = data / p + weight * state[
        "locs.mu_unconstrained"
    ].expand(n)
    normal.load_state_dict(normal_state)
    pyro.set_rng_seed(0)
    elbo = -Trace_ELBO(num_particles=200, vectorize_particles=True).loss(
        group_model, normal, data
    )
    assert elbo < evidence.item() - 0.1


@pytest.mark.slow
def test_hierarchical_messenger_fits_a_group_model_better_than_the_normal_one():
    def fit(cls):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        guide = cls(group_model)
        elbo = Trace_ELBO(num_particles=8, vectorize_particles=True)
        svi = pyro.infer.SVI(group_model, guide, pyro.optim.Adam({"lr": 0.05}), elbo)
        for _ in range(300):
            svi.step(GROUP_DATA)
        pyro.set_rng_seed(1)
        final = Trace_ELBO(num_particles=2000, vectorize_particles=True)
        return -final.loss(group_model, guide, GROUP_DATA)

    hierarchical = fit(guide_core.AutoHierarchicalNormalMessenger)
    normal = fit(guide_core.AutoNormalMessenger)
    assert hierarchical > normal + 0.3
    assert hierarchical < group_log_evidence(GROUP_DATA).item() + 0.05  # a bound


# -- composition, Predictive, state ------------------------------------------------


def ab_model(data):
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.LogNormal(a, 1.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(b, 1.0), obs=data)


@pytest.mark.parametrize("cls_name", NAMES)
def test_messenger_in_a_guide_list_trains_summarises_and_reloads(cls_name):
    def make():
        guide = AutoGuideList(ab_model)
        guide.append(getattr(guide_core, cls_name)(poutine.block(ab_model, hide=["b"])))
        guide.append(guide_core.AutoNormal(poutine.block(ab_model, hide=["a"])))
        return guide

    guide = make()
    trace = poutine.trace(guide).get_trace(DATA)
    assert "obs" not in trace.nodes  # the messenger's model is not the guide
    # the list's loss is the plain ELBO: only a and b are guide sites
    pyro.set_rng_seed(1)
    loss = Trace_ELBO().loss(ab_model, guide, DATA)
    pyro.set_rng_seed(1)
    trace = poutine.trace(guide).get_trace(DATA)
    replayed = poutine.trace(poutine.replay(ab_model, trace)).get_trace(DATA)
    expected = trace.log_prob_sum() - replayed.log_prob_sum()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    svi = pyro.infer.SVI(ab_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(5):
        svi.step(DATA)
    assert "AutoGuideList.0._guide.locs.a" in pyro.get_param_store()
    median = guide.median(DATA)
    assert set(median) == {"a", "b"}
    assert set(guide.quantiles([0.2, 0.8], DATA)) == {"a", "b"}
    state = {k: v.clone() for k, v in guide.state_dict().items()}
    pyro.clear_param_store()
    fresh = make()
    fresh.load_state_dict(state)
    assert sorted(fresh.state_dict()) == sorted(state)
    for name, value in fresh.median(DATA).items():
        torch.testing.assert_close(value, median[name])


@pytest.mark.parametrize("cls_name", NAMES)
def test_predictive_draws_latents_and_observations(cls_name):
    guide = getattr(guide_core, cls_name)(ab_model)
    samples = Predictive(ab_model, guide=guide, num_samples=6)(DATA)
    pyro_guide = getattr(oracle, cls_name)(ab_model)
    pyro.clear_param_store()
    theirs = Predictive(ab_model, guide=pyro_guide, num_samples=6)(DATA)
    assert {k: v.shape for k, v in samples.items()} == {
        k: v.shape for k, v in theirs.items()
    }
    assert samples["a"].std() > 0
    parallel = Predictive(ab_model, guide=guide, num_samples=6, parallel=True)(DATA)
    assert parallel["obs"].shape == (6, len(DATA))


@pytest.mark.parametrize("cls_name", NAMES)
def test_state_dict_loads_into_a_fresh_guide_before_any_call(cls_name):
    make, _ = builders(cls_name, "constrained")
    trained = run_svi(make, MODELS["constrained"], DATA, steps=10)
    state = {k: v.clone() for k, v in trained.guide.state_dict().items()}
    pyro.clear_param_store()
    fresh = make(MODELS["constrained"])
    fresh.load_state_dict(state)
    assert sorted(fresh.state_dict()) == sorted(state)  # pending, still reported
    median = fresh.median(DATA)
    for name, value in trained.median.items():
        torch.testing.assert_close(median[name], value)
    q = fresh.quantiles([0.1, 0.5, 0.9], DATA)
    for name, value in trained.quantiles.items():
        torch.testing.assert_close(q[name], value)


def test_a_branch_not_taken_yet_keeps_its_loaded_state_pending():
    def model(flag):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        if flag:
            pyro.sample("b", dist.Normal(a, 1.0))

    trained = guide_core.AutoNormalMessenger(model)
    trained(True)
    with torch.no_grad():
        trained.locs.b_unconstrained.fill_(4.0)
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    pyro.clear_param_store()
    guide = guide_core.AutoNormalMessenger(model)
    guide.load_state_dict(state)
    guide(False)  # creates a's parameters only
    assert not hasattr(guide.locs, "b")
    assert sorted(guide.state_dict()) == sorted(state)
    assert guide.median(True)["b"] == pytest.approx(4.0)
    with pytest.raises(RuntimeError, match="Unexpected key.*'?typo"):
        guide_core.AutoNormalMessenger(model).load_state_dict({"typo": torch.ones(())})


def test_a_loaded_state_of_the_wrong_shape_is_an_error_naming_the_site():
    guide = guide_core.AutoNormalMessenger(MODELS["vector"])
    guide.load_state_dict({"locs.w_unconstrained": torch.zeros(2)})
    with pytest.raises(
        ValueError, match=r"'locs.w_unconstrained' of shape \(2,\).*'w'"
    ):
        guide(DATA)


# -- plates, ELBOs, names, registry ----------------------------------------------


@pytest.mark.parametrize("cls_name", NAMES)
def test_amortized_plates_share_parameters_under_subsampling_as_pyro(cls_name):
    data = torch.randn(8)

    def model(data):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 8, subsample_size=3) as idx:
            x = pyro.sample("x", dist.Normal(loc, 1.0))
            pyro.sample("obs", dist.Normal(x, 1.0), obs=data[idx])

    def make(lib, **kwargs):
        return lambda m: without_median(getattr(lib, cls_name))(m, **kwargs)

    for kwargs, shape in [({}, (8,)), ({"amortized_plates": ("data",)}, ())]:
        ours = run_svi(make(guide_core, **kwargs), model, data, levels=None)
        pyros = run_svi(make(oracle, **kwargs), model, data, levels=None)
        assert_same_training(ours, pyros)
        assert ours.params["locs.x"].shape == shape


def test_trace_mean_field_elbo_matches_pyro():
    elbo = TraceMeanField_ELBO()
    ours = run_svi(guide_core.AutoNormalMessenger, scalar_model, DATA, elbo=elbo)
    pyros = run_svi(oracle.AutoNormalMessenger, scalar_model, DATA, elbo=elbo)
    assert_same_training(ours, pyros)


def test_first_call_inside_a_particle_plate_makes_unbatched_parameters():
    guide = guide_core.AutoRegressiveMessenger(MODELS["vector"])
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    elbo.loss(MODELS["vector"], guide, DATA)
    assert guide.locs.w.shape == (3,)


@pytest.mark.parametrize("cls_name", NAMES)
def test_trace_sites_param_names_and_registry_match(cls_name):
    model = MODELS["constrained"]
    kwargs = options(cls_name, "constrained", guide_core)
    ours = getattr(guide_core, cls_name)(model, **kwargs)
    theirs = getattr(oracle, cls_name)(
        model, **options(cls_name, "constrained", oracle)
    )
    pyro.set_rng_seed(0)
    ours(DATA)
    names = sorted(pyro.get_param_store())
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    theirs(DATA)
    assert names == sorted(pyro.get_param_store())
    ours_trace, theirs_trace = ours.get_traces()[1], theirs.get_traces()[1]
    assert list(ours_trace.nodes) == list(theirs_trace.nodes)
    for name, site in theirs_trace.nodes.items():
        assert type(ours_trace.nodes[name]["fn"]) is type(site["fn"])
    spec = registry.info(registry_name(cls_name))
    assert spec.family == "messengers" and spec.capabilities.subsample
    assert not spec.capabilities.discrete and not spec.capabilities.jit
    made = registry.make(registry_name(cls_name), model, init_loc_fn="median", **kwargs)
    assert made.init_loc_fn is guide_core.init_to_median


def registry_name(cls_name):
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in cls_name)[1:]


def test_weight_type_and_hierarchical_sites_as_pyro():
    assert guide_core.AutoHierarchicalNormalMessenger.weight_type == "element-wise"
    guide = guide_core.AutoHierarchicalNormalMessenger(
        MODELS["plated"],
        init_loc_fn=guide_core.init_to_median,
        hierarchical_sites=["mu"],
    )
    guide(DATA)
    assert guide.weights.mu.shape == (2, 1) and not hasattr(guide.weights, "tau")


# -- bad input -------------------------------------------------------------------


@pytest.mark.parametrize("cls_name", NAMES)
@pytest.mark.parametrize("bad", [0.0, -0.1])
def test_non_positive_init_scale_is_an_error(cls_name, bad):
    with pytest.raises(ValueError, match="'init_scale' must be > 0"):
        getattr(guide_core, cls_name)(scalar_model, init_scale=bad)


@pytest.mark.parametrize("cls_name", NAMES)
def test_discrete_site_is_an_error_naming_the_site_and_the_fix(cls_name):
    def model():
        pyro.sample("k", dist.Categorical(torch.ones(3)))

    with pytest.raises(ValueError, match="discrete sample site 'k'") as err:
        getattr(guide_core, cls_name)(model)()
    assert "poutine.block(model, hide=['k'])" in str(err.value)


@pytest.mark.parametrize("cls_name", NAMES)
def test_amortized_plates_as_a_string_is_an_error_showing_the_tuple(cls_name):
    with pytest.raises(TypeError, match=r"\('data',\)"):
        getattr(guide_core, cls_name)(scalar_model, amortized_plates="data")


def test_hierarchical_arguments_are_checked():
    cls = guide_core.AutoHierarchicalNormalMessenger
    with pytest.raises(TypeError, match=r"hierarchical_sites.*\['mu'\]"):
        cls(scalar_model, hierarchical_sites="mu")
    with pytest.raises(ValueError, match="'init_weight' must be > 0"):
        cls(scalar_model, init_weight=0.0)
    with pytest.raises(ValueError, match="site 'corr' has a prior without a finite"):
        cls(MODELS["constrained"])(DATA)


def test_an_infinite_prior_mean_starts_at_the_fallback_with_a_warning_naming_the_site():
    """The core's rule for every guide: ``init_to_mean`` falls back where the
    prior mean is infinite; the messengers' default fallback is Pyro's,
    ``init_to_feasible``."""
    guide = guide_core.AutoNormalMessenger(MODELS["plated"])
    with pytest.warns(UserWarning, match="site 'tau' is infinite.*init_to_feasible"):
        guide(DATA)
    assert all(torch.isfinite(v).all() for v in guide.median(DATA).values())


def test_init_value_outside_the_support_is_an_error_naming_the_site():
    init = guide_core.init_to_value(values={"scale": torch.tensor(-2.0)})
    with pytest.raises(ValueError, match="outside the support of site 'scale'"):
        guide_core.AutoNormalMessenger(MODELS["constrained"], init_loc_fn=init)(DATA)
    with pytest.raises(TypeError, match="'init_loc_fn' must be an init strategy"):
        guide_core.AutoNormalMessenger(scalar_model, init_loc_fn="median")


def test_quantile_helper_uses_the_exact_inverse_cdf_when_there_is_one():
    prior = dist.HalfCauchy(torch.ones(2))
    transform = torch.distributions.biject_to(prior.support)
    q = regressive.unconstrained_prior_quantile(prior, transform, torch.tensor(0.5))
    torch.testing.assert_close(q, torch.zeros(2))  # log of the median 1
