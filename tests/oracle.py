"""Differential testing against pyro.infer.autoguide (the oracle) and test models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pyro
import pyro.distributions as dist
import torch


@attrs.frozen
class Run:
    """What one guide did: losses, parameters, medians and quantiles."""

    guide: Any
    losses: list[float]
    params: dict[str, torch.Tensor]
    initial: dict[str, torch.Tensor]
    median: dict[str, torch.Tensor]
    quantiles: dict[str, torch.Tensor] | None


def run_svi(
    make_guide: Callable[[Callable], Any],
    model: Callable,
    *args: Any,
    steps: int = 20,
    elbo: Any = None,
    lr: float = 0.05,
    seed: int = 0,
    levels: tuple[float, ...] | None = (0.1, 0.5, 0.9),
) -> Run:
    """Build a guide and train it from a fixed seed; record everything."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = make_guide(model)
    elbo = elbo if elbo is not None else pyro.infer.Trace_ELBO()
    with torch.no_grad():
        pyro.set_rng_seed(seed)
        guide(*args)  # create the parameters
    initial = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo)
    pyro.set_rng_seed(seed)
    losses = [svi.step(*args) for _ in range(steps)]
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    median = {k: v.detach() for k, v in guide.median(*args).items()}
    quantiles = None
    if levels is not None and hasattr(guide, "quantiles"):
        quantiles = guide.quantiles(list(levels), *args)
    return Run(guide, losses, params, initial, median, quantiles)


def assert_same_runs(
    ours: Run,
    pyros: Run,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    skip_median: tuple[str, ...] = (),
):
    """Assert two runs agree: param names and values, losses, medians, quantiles
    (except the medians of ``skip_median``)."""
    assert sorted(ours.initial) == sorted(pyros.initial)
    for name in pyros.initial:
        torch.testing.assert_close(ours.initial[name], pyros.initial[name])
    torch.testing.assert_close(
        torch.tensor(ours.losses), torch.tensor(pyros.losses), rtol=rtol, atol=atol
    )
    for name in pyros.params:
        torch.testing.assert_close(
            ours.params[name], pyros.params[name], rtol=rtol, atol=atol
        )
    assert sorted(ours.median) == sorted(pyros.median)
    for name in set(pyros.median) - set(skip_median):
        torch.testing.assert_close(
            ours.median[name], pyros.median[name], rtol=rtol, atol=atol
        )
    if pyros.quantiles is not None:
        for name in pyros.quantiles:
            torch.testing.assert_close(
                ours.quantiles[name], pyros.quantiles[name], rtol=rtol, atol=atol
            )


# -- models covering scalar, vector, constrained and plated sites ---------------

DATA = torch.tensor([0.3, -1.2, 0.8, 2.0, 0.1])


def scalar_model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 2.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)


def vector_model(data):
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(w.sum(), 1.0), obs=data)


def constrained_model(data):
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    probs = pyro.sample("probs", dist.Dirichlet(torch.ones(3)))
    frac = pyro.sample("frac", dist.Beta(2.0, 2.0))
    corr = pyro.sample("corr", dist.LKJCholesky(2, 1.0))
    bound = pyro.sample("bound", dist.Uniform(-1.0, 3.0))
    loc = probs[0] * frac + corr[1, 0] + bound
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, scale), obs=data)


def plated_model(data):
    tau = pyro.sample("tau", dist.HalfCauchy(1.0))
    with pyro.plate("groups", 2, dim=-2):
        mu = pyro.sample("mu", dist.Normal(0.0, tau))
        with pyro.plate("data", len(data), dim=-1):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)


def subsample_model(data):
    """A local latent per data point in a plate of 8, subsampled 3 at a time."""
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 8, subsample_size=3) as idx:
        x = pyro.sample("x", dist.Normal(loc, 1.0))
        pyro.sample("obs", dist.Normal(x, 1.0), obs=data[idx])


def subsample_plates(data):
    """The ``create_plates`` of :func:`subsample_model`."""
    return pyro.plate("data", 8, subsample_size=3)


MODELS = {
    "scalar": scalar_model,
    "vector": vector_model,
    "constrained": constrained_model,
    "plated": plated_model,
}
