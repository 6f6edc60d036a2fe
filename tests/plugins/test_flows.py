"""The flows family: differential tests against pyro.infer.autoguide's flows."""

from __future__ import annotations

import functools
import re

import pyro
import pyro.distributions as dist
import pyro.infer.autoguide as oracle
import pytest
import torch
from oracle import DATA, MODELS, scalar_model
from pyro import poutine
from pyro.distributions.transforms import block_autoregressive, iterated
from pyro.infer import JitTrace_ELBO, Trace_ELBO

import guide_core

# Pyro also stores a duplicate of the flow's first parameter under this name (a
# side effect of how it tracks the dtype); ours does not.
PYRO_DUPLICATE = "._prototype_tensor"

FLOWS = {
    "iaf": lambda cls: functools.partial(cls, hidden_dim=[6]),
    "iaf2": lambda cls: functools.partial(cls, num_transforms=2),
    "bna": lambda cls: functools.partial(
        cls, init_transform_fn=functools.partial(iterated, 2, block_autoregressive)
    ),
}
CLASSES = {
    "iaf": "AutoIAFNormal",
    "iaf2": "AutoIAFNormal",
    "bna": "AutoNormalizingFlow",
}


def make(kind, pyros=False):
    module = oracle if pyros else guide_core
    return FLOWS[kind](getattr(module, CLASSES[kind]))


def train(make_guide, model, steps=20, elbo=Trace_ELBO):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = make_guide(model)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), elbo())
    losses = [svi.step(DATA) for _ in range(steps)]
    params = {
        k: v.detach().clone()
        for k, v in pyro.get_param_store().items()
        if not k.endswith(PYRO_DUPLICATE)
    }
    return guide, losses, params


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("kind", sorted(FLOWS))
def test_matches_pyro_parameters_and_losses(kind, model):
    mine, losses, params = train(make(kind), MODELS[model])
    theirs, p_losses, p_params = train(make(kind, pyros=True), MODELS[model])
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(p_losses))
    assert sorted(params) == sorted(p_params)
    for key, value in p_params.items():
        torch.testing.assert_close(params[key], value)
    pyro.set_rng_seed(1)
    sample = poutine.trace(mine).get_trace(DATA)
    pyro.set_rng_seed(1)
    expected = poutine.trace(theirs).get_trace(DATA)
    assert list(sample.stochastic_nodes) == list(expected.stochastic_nodes)
    for name in expected.stochastic_nodes:
        torch.testing.assert_close(
            sample.nodes[name]["value"], expected.nodes[name]["value"]
        )


@pytest.mark.parametrize("kind", sorted(FLOWS))
def test_jit_trace_elbo_trains(kind):
    model = MODELS["constrained"]
    _, losses, params = train(make(kind), model, steps=30, elbo=JitTrace_ELBO)
    _, eager, eager_params = train(make(kind), model, steps=1)
    assert sorted(params) == sorted(eager_params)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-10:]) < sum(losses[:10])


def _affine_flow(loc, scale):
    def init_transform_fn(dim):
        return dist.transforms.AffineTransform(
            torch.full((dim,), loc), torch.full((dim,), scale), event_dim=1
        )

    return init_transform_fn


def test_median_and_quantiles_are_sampled_and_leave_the_rng_alone():
    model = MODELS["plated"]
    guide = guide_core.AutoNormalizingFlow(model, _affine_flow(0.5, 0.3))
    guide.num_summary_samples = 4000
    guide(DATA)
    state = torch.get_rng_state()
    median = guide.median(DATA)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(median, guide.median(DATA))
    exact = dist.Normal(0.5, 0.3)
    levels = torch.tensor([0.1, 0.5, 0.9])
    quantiles = guide.quantiles(levels, DATA)
    transform = guide._layout.slots[0].site.require_transform()  # tau: positive
    expected_tau = transform(exact.icdf(levels))
    torch.testing.assert_close(quantiles["tau"], expected_tau, atol=0.04, rtol=0.03)
    assert quantiles["mu"].shape == (3, 2, 1)
    torch.testing.assert_close(
        quantiles["mu"],
        exact.icdf(levels).reshape(3, 1, 1).expand(3, 2, 1),
        atol=0.03,
        rtol=0,
    )
    torch.testing.assert_close(median["mu"], torch.full((2, 1), 0.5), atol=0.03, rtol=0)


def test_iaf_median_and_quantiles_after_training():
    guide, _, _ = train(make("iaf"), MODELS["constrained"], steps=5)
    median, q = guide.median(DATA), guide.quantiles([0.05, 0.5, 0.95], DATA)
    assert set(median) == set(q) == {"scale", "probs", "frac", "corr", "bound"}
    assert q["probs"].shape == (3, 3) and q["corr"].shape == (3, 2, 2)
    assert torch.allclose(q["probs"].sum(-1), torch.ones(3))  # still on the simplex
    assert bool((q["bound"][0] <= q["bound"][2]) & (q["bound"] > -1).all())


def test_registered_and_importable():
    for name in ("auto_normalizing_flow", "auto_iaf_normal"):
        assert guide_core.registry.info(name).family == "flows"
    guide = guide_core.registry.make("auto_iaf_normal", scalar_model, hidden_dim=[4])
    assert isinstance(guide, guide_core.AutoContinuous)


# -- bad input -----------------------------------------------------------------


def test_init_loc_fn_warns_that_it_is_ignored():
    with pytest.warns(FutureWarning, match="ignores init_loc_fn"):
        guide_core.AutoIAFNormal(scalar_model, init_loc_fn=guide_core.init_to_mean)


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_bad_num_transforms_is_an_error(bad):
    with pytest.raises(ValueError, match="'num_transforms' must be an int >= 1"):
        guide_core.AutoIAFNormal(scalar_model, num_transforms=bad)


def test_init_transform_fn_must_build_a_transform():
    with pytest.raises(TypeError, match="'init_transform_fn' must be callable"):
        guide_core.AutoNormalizingFlow(scalar_model, 3)
    guide = guide_core.AutoNormalizingFlow(scalar_model, lambda dim: "not a transform")
    with pytest.raises(TypeError, match=r"init_transform_fn\(1\) returned 'not a"):
        guide(DATA)


def test_subsampled_local_latents_are_an_error_naming_the_plate():
    def model():
        with pyro.plate("rows", 10, subsample_size=3):
            pyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="site 'x'.*subsampled plate 'rows'"):
        guide_core.AutoIAFNormal(model)()


def test_a_trained_flow_loads_before_any_call_and_reproduces_its_median():
    import pyro

    from guide_core import AutoIAFNormal

    def model():
        pyro.sample("x", pyro.distributions.Normal(torch.zeros(2), 1.0).to_event(1))

    trained = AutoIAFNormal(model, hidden_dim=[4])
    svi = pyro.infer.SVI(
        model, trained, pyro.optim.Adam({"lr": 0.01}), pyro.infer.Trace_ELBO()
    )
    for _ in range(5):
        svi.step()
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    expected = trained.median()["x"]
    assert torch.equal(trained.median()["x"], expected)  # a function of the params
    pyro.clear_param_store()
    fresh = AutoIAFNormal(model, hidden_dim=[4])
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.median()["x"], expected, rtol=0, atol=0)


def _five_dims():
    pyro.sample("x", dist.Normal(torch.zeros(5), 1.0).to_event(1))


@pytest.mark.parametrize(
    "hidden_dim, smallest", [([4], 4), ([6, 3], 3), (4, 4), ((5, 1), 1)]
)
def test_hidden_dim_smaller_than_the_latent_dim_is_a_clear_error(hidden_dim, smallest):
    guide = guide_core.AutoIAFNormal(_five_dims, hidden_dim=hidden_dim)
    expected = (
        rf"hidden_dim={re.escape(repr(hidden_dim))} has a layer of {smallest} units, "
        r"but the latent dimension is 5 .* at least latent_dim = 5 units; pass "
        r"hidden_dim=\[16\] \(the default"
    )
    with pytest.raises(ValueError, match=expected):
        guide()


@pytest.mark.parametrize("hidden_dim", [[4], [5], [6, 4], [7, 5], [5, 5]])
def test_hidden_dim_is_refused_exactly_where_pyros_network_fails(hidden_dim):
    def fails(cls):
        try:
            cls(_five_dims, hidden_dim=hidden_dim)()
        except ValueError:
            return True
        return False

    assert fails(guide_core.AutoIAFNormal) == fails(oracle.AutoIAFNormal)
    assert fails(guide_core.AutoIAFNormal) == (min(hidden_dim) < 5)


def test_an_int_hidden_dim_is_one_layer():
    # Pyro's own docstring shows hidden_dim=latent_dim, which Pyro then rejects
    guide = guide_core.AutoIAFNormal(_five_dims, hidden_dim=5, num_transforms=2)
    guide()
    for part in guide.transform.parts:
        assert part.arn.hidden_dims == [5]


@pytest.mark.parametrize("bad", [[], 0, [0], [-3], 2.5, "5", [5.0], True, [True]])
def test_bad_hidden_dim_is_an_error_at_construction(bad):
    with pytest.raises(ValueError, match="'hidden_dim' must be a non-empty list"):
        guide_core.AutoIAFNormal(_five_dims, hidden_dim=bad)
