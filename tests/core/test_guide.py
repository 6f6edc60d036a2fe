"""The AutoGuide protocol and the prototype facts every family reads."""

from __future__ import annotations

import pickle

import pyro
import pyro.distributions as dist
import pytest
import torch
from toys import AutoPoint

from guide_core import init_to_feasible, init_to_value
from guide_core.core.guide import validate_init_scale


def model(data=None):
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    probs = pyro.sample("probs", dist.Dirichlet(torch.ones(3)))
    with pyro.plate("outer", 4, dim=-2):
        with pyro.plate("inner", 5, dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, scale))
    pyro.sample("obs", dist.Normal(z.sum(), 1.0), obs=torch.tensor(0.0))
    return probs


def test_prototype_records_each_latent_sites_facts():
    guide = AutoPoint(model)
    guide()
    sites = guide._prototype.sites
    assert list(sites) == ["scale", "probs", "z"]  # observed sites are left out
    assert sites["probs"].event_dim == 1
    assert sites["probs"].unconstrained_value.shape == (2,)  # simplex: one dim fewer
    assert sites["probs"].unconstrained_event_dim == 1
    assert sites["z"].shape == (4, 5)
    assert [(p.name, p.dim, p.size) for p in sites["z"].plates] == [
        ("outer", -2, 4),
        ("inner", -1, 5),
    ]
    assert not sites["scale"].is_discrete
    assert set(guide._prototype_frames) == {"outer", "inner"}
    assert guide.prototype_trace is guide._prototype.trace


def test_model_property_and_guide_runs_under_svi_and_call_returns_sorted_tuple():
    guide = AutoPoint(model)
    assert callable(guide.model)
    svi = pyro.infer.SVI(
        model, guide, pyro.optim.Adam({"lr": 0.01}), pyro.infer.Trace_ELBO()
    )
    assert torch.isfinite(torch.tensor(svi.step()))
    result = guide()
    values = guide.call()
    assert isinstance(values, tuple)
    assert all(torch.equal(a, result[k]) for a, k in zip(values, sorted(result)))
    assert guide.sample_latent() is None


def test_median_and_quantiles_constrain_the_unconstrained_marginals():
    guide = AutoPoint(
        model, init_loc_fn=init_to_value(values={"scale": torch.tensor(2.0)})
    )
    median = guide.median()
    assert torch.allclose(median["scale"], torch.tensor(2.0))
    assert torch.allclose(median["probs"].sum(), torch.tensor(1.0))
    q = guide.quantiles([0.1, 0.5, 0.9])
    assert q["z"].shape == (3, 4, 5)
    assert q["scale"][0] < q["scale"][1] < q["scale"][2]
    assert torch.allclose(q["scale"][1], median["scale"])


def test_quantiles_refuse_levels_outside_zero_one():
    guide = AutoPoint(model)
    with pytest.raises(ValueError, match=r"quantile levels must lie in \[0, 1\]"):
        guide.quantiles([0.5, 1.5])
    with pytest.raises(ValueError, match="non-empty list of levels"):
        guide.quantiles([])


def test_median_needs_forward_arguments_only_once():
    guide = AutoPoint(model)
    guide.median()
    assert guide.prototype_trace is not None


def test_sequential_plate_is_an_error_naming_site_and_plate():
    def seq_model():
        for i in pyro.plate("seq", 2):
            pyro.sample(f"x_{i}", dist.Normal(0.0, 1.0))

    with pytest.raises(
        NotImplementedError, match="site 'x_0' is in the sequential plate 'seq'"
    ):
        AutoPoint(seq_model)()


def test_init_value_of_wrong_shape_is_an_error_naming_site_and_shape():
    init = init_to_value(values={"z": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"shape \(3,\) for site 'z'.*shape \(4, 5\)"):
        AutoPoint(model, init_loc_fn=init)()


def test_init_value_outside_support_is_an_error_naming_site_and_fix():
    init = init_to_value(values={"scale": torch.tensor(-1.0)})
    with pytest.raises(ValueError, match="outside the support of site 'scale'"):
        AutoPoint(model, init_loc_fn=init)()


def test_non_callable_init_loc_fn_is_an_error():
    with pytest.raises(TypeError, match="'init_loc_fn' must be an init strategy"):
        AutoPoint(model, init_loc_fn="median")


def test_discrete_site_errors_only_when_its_bijection_is_needed():
    def discrete_model():
        pyro.sample("k", dist.Bernoulli(0.5))

    guide = AutoPoint(discrete_model)
    with pytest.raises(ValueError, match="discrete.*'k'|'k'.*discrete") as err:
        guide()
    assert "poutine.block(model, hide=['k'])" in str(err.value)


def test_create_plates_subsamples_with_full_size_parameters():
    data = torch.arange(10.0)

    def sub_model(data):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 10, subsample_size=3) as idx:
            x = pyro.sample("x", dist.Normal(loc, 1.0))
            pyro.sample("obs", dist.Normal(x, 1.0), obs=data[idx])

    def create_plates(data):
        return pyro.plate("data", 10, subsample_size=3)

    guide = AutoPoint(sub_model, create_plates=create_plates)
    trace = pyro.poutine.trace(guide).get_trace(data)
    assert guide.x.shape == (10,)  # full size
    assert trace.nodes["x"]["value"].shape == (3,)  # subsampled


def test_create_plates_returning_a_non_plate_is_an_error():
    guide = AutoPoint(model, create_plates=lambda *a: ["not a plate"])
    with pytest.raises(TypeError, match="create_plates returned 'not a plate'"):
        guide()


def test_state_loaded_before_the_first_call_is_applied_without_warm_up():
    trained = AutoPoint(model)
    svi = pyro.infer.SVI(
        model, trained, pyro.optim.Adam({"lr": 0.1}), pyro.infer.Trace_ELBO()
    )
    for _ in range(5):
        svi.step()
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    expected = trained.median()
    pyro.clear_param_store()
    fresh = AutoPoint(model, init_loc_fn=init_to_feasible)
    fresh.load_state_dict(state)
    assert set(fresh.state_dict()) == set(state)
    got = fresh.median()
    for name in expected:
        assert torch.allclose(got[name], expected[name])


def test_loaded_state_wins_over_stale_param_store_entries():
    trained = AutoPoint(model)
    trained()
    state = {k: v.clone() + 1.0 for k, v in trained.state_dict().items()}
    fresh = AutoPoint(model)  # same param-store names as `trained`
    fresh.load_state_dict(state)
    fresh()
    assert torch.allclose(
        fresh.state_dict()["scale_unconstrained"], state["scale_unconstrained"]
    )


def test_guide_pickles_without_its_model():
    guide = AutoPoint(model)
    guide()
    clone = pickle.loads(pickle.dumps(guide))
    assert clone._model is None
    assert torch.equal(clone.scale_unconstrained, guide.scale_unconstrained)


@pytest.mark.parametrize("bad", [0.0, -1.0, "0.1", True])
def test_init_scale_must_be_a_positive_float(bad):
    with pytest.raises((ValueError, TypeError), match="'init_scale' must be"):
        validate_init_scale(bad)
    assert validate_init_scale(1) == 1.0


def test_explicit_subsample_indices_of_the_model_are_respected():
    data = torch.arange(10.0)

    def explicit_model(data, idx):
        with pyro.plate("data", 10, subsample=idx):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(x, 1.0), obs=data[idx])

    guide = AutoPoint(explicit_model)
    for idx in (torch.tensor([1, 4, 7]), torch.tensor([0, 2, 9])):
        guide_trace = pyro.poutine.trace(guide).get_trace(data, idx)
        assert torch.equal(guide_trace.nodes["data"]["value"], idx)
        replayed = pyro.poutine.trace(
            pyro.poutine.replay(explicit_model, trace=guide_trace)
        ).get_trace(data, idx)
        assert torch.equal(replayed.nodes["data"]["value"], idx)
    assert guide._prototype.explicit_subsamples == {"data"}


@pytest.mark.parametrize(
    "d",
    [dist.HalfCauchy(2.0), dist.HalfNormal(2.0), dist.LogNormal(0.5, 1.0)],
    ids=lambda d: type(d).__name__,
)
def test_distribution_quantiles_use_the_distributions_own_icdf(d):
    from guide_core.core.summaries import distribution_median, distribution_quantiles

    q = torch.tensor([0.25, 0.5, 0.75])
    samples = d.sample((200_000,))
    expected = torch.quantile(samples, q.to(samples.dtype))
    torch.testing.assert_close(
        distribution_quantiles(d, q), expected, rtol=0.02, atol=0.01
    )
    torch.testing.assert_close(
        distribution_median(d), expected[1], rtol=0.02, atol=0.01
    )
