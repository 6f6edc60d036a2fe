"""Supports that depend on another latent site, ``b ~ Uniform(0, 1 - a)``:
every guide draw stays inside the model's support, where a guide that fixes
the support at its prototype (Pyro's) does not."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal as PyroAutoNormal

import guide_core
from guide_core import registry
from guide_core.core.prototype import trace_prototype


def triangle():
    a = pyro.sample("a", dist.Uniform(0.0, 1.0))
    pyro.sample("b", dist.Uniform(0.0, 1.0 - a))


def _draws(guide, n=300):
    with torch.no_grad():
        calls = [guide() for _ in range(n)]
    return torch.stack([c["a"] for c in calls]), torch.stack([c["b"] for c in calls])


def test_the_prototype_finds_the_dependent_site():
    sites = trace_prototype(triangle).sites
    assert sites["b"].support_given is not None
    assert sites["a"].support_given is None
    support = sites["b"].support_given({"a": torch.tensor(0.75)})
    assert torch.allclose(support.upper_bound, torch.tensor(0.25))
    # batched values (vectorized draws) give batched bounds
    support = sites["b"].support_given({"a": torch.tensor([0.75, 0.5])})
    assert torch.allclose(support.upper_bound, torch.tensor([0.25, 0.5]))
    # without the value it depends on there is no support to give
    assert sites["b"].support_given({}) is None


@pytest.mark.parametrize(
    "name",
    [
        "auto_normal",
        "auto_diagonal_normal",
        "auto_multivariate_normal",
        "auto_low_rank_multivariate_normal",
    ],
)
def test_every_draw_is_inside_the_support(name):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = registry.make(name, triangle, init_scale=2.0)
    a, b = _draws(guide)
    assert bool((b < 1 - a).all()) and bool((b > 0).all())
    # and the guide's density of its own draws is finite
    trace = pyro.poutine.trace(guide).get_trace()
    assert torch.isfinite(trace.log_prob_sum())


def test_a_guide_with_a_fixed_support_leaves_it():
    # the bug this fixes, shown on the oracle: Pyro's AutoNormal maps b onto
    # (0, 1 - a at the prototype) whatever a it draws
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = PyroAutoNormal(triangle, init_scale=2.0)
    a, b = _draws(guide)
    assert not bool((b < 1 - a).all())


@pytest.mark.slow
def test_fit_recovers_the_triangle():
    # a ~ U(0, 1), b | a ~ U(0, 1 - a): E[a] = 1/2, E[b] = E[(1 - a) / 2] = 1/4
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = registry.make("auto_multivariate_normal", triangle)
    guide_core.fit(triangle, guide, progress=False, khat=False)
    a, b = _draws(guide, 2000)
    assert bool((b < 1 - a).all())
    assert abs(float(a.mean()) - 0.5) < 0.05
    assert abs(float(b.mean()) - 0.25) < 0.05
