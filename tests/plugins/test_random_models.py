"""What random models caught: each family on heavy-tailed priors and on
supports that follow a subsample, trained a few steps, finite and well shaped."""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from guide_core import init_to_mean, registry

# Every family that takes an init_loc_fn (the hierarchical messenger aside: it
# needs a finite prior mean by design and says so).
INIT_GUIDES = [
    "auto_normal",
    "auto_delta",
    "auto_diagonal_normal",
    "auto_multivariate_normal",
    "auto_low_rank_multivariate_normal",
    "auto_laplace_approximation",
    "auto_normal_messenger",
    "auto_regressive_messenger",
    "auto_structured",
    "auto_gaussian",
]


def heavy_tailed():
    s = pyro.sample("s", dist.HalfCauchy(1.0))
    c = pyro.sample("c", dist.Cauchy(0.0, 1.0))
    t = pyro.sample("t", dist.StudentT(1.0, 0.0, 1.0).expand([3]).to_event(1))
    pyro.sample("obs", dist.Normal(c + t.sum(), s), obs=torch.tensor(0.5))


@pytest.mark.parametrize("name", INIT_GUIDES)
def test_init_to_mean_on_priors_without_a_finite_mean_trains(name):
    if name not in registry.names():
        pytest.skip(f"{name} is not installed")
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = registry.make(name, heavy_tailed, init_loc_fn=init_to_mean)
    svi = pyro.infer.SVI(
        heavy_tailed, guide, pyro.optim.Adam({"lr": 0.01}), pyro.infer.Trace_ELBO()
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = [svi.step() for _ in range(5)]
    assert all(math.isfinite(loss) for loss in losses), losses
    said = {str(w.message) for w in caught if "init_to_mean" in str(w.message)}
    assert any("'s' is infinite" in m for m in said), said
    assert any("'c' is undefined" in m for m in said), said
    median = guide.median()
    assert all(torch.isfinite(v).all() for v in median.values())
    assert median["t"].shape == (3,)
