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


LOW = torch.arange(10.0)


def uniform_in_subsample(data=LOW + 0.3, size=4):
    with pyro.plate("p", 10, subsample_size=size) as idx:
        x = pyro.sample("x", dist.Uniform(LOW[idx], LOW[idx] + 1.0))
        pyro.sample("obs", dist.Normal(x, 0.3), obs=data[idx])


@pytest.mark.parametrize("name", ["auto_normal", "auto_delta", "auto"])
def test_a_support_batched_over_a_subsampled_plate_follows_the_subsample(name):
    """Pyro's guides keep the bounds of the first subsample and leave the
    support at the next one; ours cut the whole plate's bounds at each step."""
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    guide = registry.make(name, uniform_in_subsample)
    svi = pyro.infer.SVI(
        uniform_in_subsample,
        guide,
        pyro.optim.Adam({"lr": 0.05}),
        pyro.infer.Trace_ELBO(),
    )
    with pyro.validation_enabled(True):  # the model checks every draw's support
        losses = [svi.step() for _ in range(60)]
    assert all(math.isfinite(loss) for loss in losses)
    median = guide.median()["x"]
    assert median.shape == (10,)
    assert ((median > LOW) & (median < LOW + 1.0)).all(), median
    # each element's posterior leans to its datum at low + 0.3
    assert (median - LOW).mean() < 0.5, median
    if name != "auto_delta":
        q = guide.quantiles([0.05, 0.95])["x"]
        assert ((q > LOW) & (q < LOW + 1.0)).all(), q


def test_a_support_in_a_subsampled_plate_gathers_its_bounds_once_at_setup():
    runs = []

    def counted():
        runs.append(1)
        uniform_in_subsample()

    guide = registry.make("auto_normal", counted)
    guide()
    assert len(runs) == 1 + 3  # the prototype, then ceil(10 / 4) blocks
    guide()
    assert len(runs) == 4


def test_a_support_batched_over_a_huge_subsampled_plate_is_a_clear_error():
    low = torch.arange(100_000.0)

    def model():
        with pyro.plate("rows", 100_000, subsample_size=10) as idx:
            pyro.sample("x", dist.Uniform(low[idx], low[idx] + 1.0))

    guide = registry.make("auto_normal", model)
    with pytest.raises(NotImplementedError, match="site 'x' .*plate 'rows'.*10000"):
        guide()


def test_a_support_batched_over_two_subsampled_plates_is_a_clear_error():
    low = torch.arange(12.0).reshape(3, 4)

    def model():
        with pyro.plate("a", 4, subsample_size=2, dim=-1) as i:
            with pyro.plate("b", 3, subsample_size=2, dim=-2) as j:
                lo = low[j][:, i]
                pyro.sample("x", dist.Uniform(lo, lo + 1.0))

    guide = registry.make("auto_normal", model)
    with pytest.raises(NotImplementedError, match="site 'x' .*'b', 'a'|'a', 'b'"):
        guide()
