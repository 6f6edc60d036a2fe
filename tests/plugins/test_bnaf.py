"""AutoBNAFNormal: a block neural autoregressive flow over the flat latent."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from guide_plugins.continuous import AutoMultivariateNormal
from guide_plugins.flows import AutoBNAFNormal
from pyro import poutine
from pyro.infer import Trace_ELBO

from guide_core import registry


def banana():
    """A 2-D banana: y bends with x**2, so no Gaussian fits it (log p(data) = 0)."""
    x = pyro.sample("x", dist.Normal(0.0, 2.0))
    pyro.sample("y", dist.Normal(0.25 * x**2, 0.5))


def elbo(guide, steps):
    loss = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=0)
    svi = pyro.infer.SVI(banana, guide, pyro.optim.Adam({"lr": 0.01}), loss)
    for _ in range(steps):
        svi.step()
    pyro.set_rng_seed(123)
    big = Trace_ELBO(num_particles=4000, vectorize_particles=True, max_plate_nesting=0)
    return -big.loss(banana, guide)


def test_registered_in_the_flows_family():
    spec = registry.info("auto_bnaf_normal")
    assert spec.family == "flows" and spec.factory is AutoBNAFNormal


@pytest.mark.parametrize("num_flows", [1, 2])
def test_smoke_names_shapes_and_summaries(num_flows):
    guide = AutoBNAFNormal(banana, num_flows=num_flows, hidden_factors=(4,))
    trace = poutine.trace(guide).get_trace()
    assert trace.nodes["_AutoBNAFNormal_latent"]["value"].shape == (2,)
    names = list(pyro.get_param_store())
    assert names and all(n.startswith("AutoBNAFNormal.transform") for n in names)
    assert math.isfinite(elbo(guide, steps=5))
    assert guide.median()["x"].shape == ()
    assert guide.quantiles([0.1, 0.9])["y"].shape == (2,)


def test_density_of_a_draw_is_base_minus_log_det():
    # log q(f(z)) = log N(z) - log|det df/dz|, with the Jacobian by autograd:
    # the chain (and the reversal between its flows) is a correct flow.
    guide = AutoBNAFNormal(banana, num_flows=2, hidden_factors=(4, 4))
    guide()
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.3 * torch.randn_like(p))
    posterior, transform = guide.get_posterior(), guide.get_transform()
    z = torch.randn(2)
    jac = torch.autograd.functional.jacobian(transform, z)
    x = transform(z)  # last, as BlockAutoregressive inverts its latest draw only
    expected = guide.get_base_dist().log_prob(z) - jac.det().abs().log()
    assert torch.allclose(posterior.log_prob(x), expected, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_flows": 0}, "'num_flows' must be an int >= 1"),
        ({"num_flows": True}, "'num_flows' must be an int >= 1"),
        ({"hidden_factors": ()}, "'hidden_factors' must be a non-empty list"),
        ({"hidden_factors": 8}, "'hidden_factors' must be a non-empty list"),
        ({"hidden_factors": [8, 0]}, "'hidden_factors' must be a non-empty list"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AutoBNAFNormal(banana, **kwargs)


def test_init_loc_fn_must_be_a_strategy():
    with pytest.raises(TypeError, match="'init_loc_fn' must be an init strategy"):
        AutoBNAFNormal(banana, init_loc_fn=3)


@pytest.mark.slow
def test_beats_a_full_normal_on_the_banana_at_equal_steps():
    bnaf = elbo(AutoBNAFNormal(banana, num_flows=2), steps=600)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    mvn = elbo(AutoMultivariateNormal(banana), steps=600)
    assert bnaf >= mvn, (bnaf, mvn)
    assert bnaf > -0.5  # log p = 0: the gap is KL(q || p)
