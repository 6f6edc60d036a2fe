"""Tiny models the contract runs every guide on, with what is known about them.

Each model takes the data as its one argument ``y`` (so an encoder can read
it) and is small enough that a few hundred steps fit it. :class:`ModelCase`
bundles a model, its arguments and, where the posterior is known in closed
form, that posterior.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import pyro
import pyro.distributions as dist
import torch

__all__ = ["CASES", "ModelCase", "case", "data"]

#: The observations every model conditions on (a float32 or float64 copy is
#: made per case, see :func:`data`).
_Y = (0.3, -1.2, 2.0, 0.7, 1.5, -0.4)


def data(dtype: torch.dtype | None = None) -> torch.Tensor:
    """The observations as a tensor of ``dtype`` (default: torch's default)."""
    return torch.tensor(_Y, dtype=dtype or torch.get_default_dtype())


def conjugate(y: torch.Tensor) -> None:
    """``z_i ~ N(0, 1)``, ``y_i ~ N(z_i, 1)``: the posterior of ``z_i`` is
    ``N(y_i / 2, 1/2)``; a vector of local latents in the plate ``data``."""
    with pyro.plate("data", len(y)):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(y), 1.0))
        pyro.sample("y", dist.Normal(z, 1.0), obs=y)


def constrained(y: torch.Tensor) -> None:
    """A global vector site ``loc`` (event shape 2) and a positive ``scale``."""
    zero = y.new_zeros(())
    loc = pyro.sample("loc", dist.Normal(zero.expand(2), 1.0).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(zero, 0.5))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(loc.sum(-1), scale), obs=y)


def subsampled(y: torch.Tensor, size: int = 3) -> None:
    """:func:`conjugate` with the plate ``data`` subsampled to ``size`` rows."""
    with pyro.plate("data", len(y), subsample_size=size) as idx:
        z = pyro.sample("z", dist.Normal(y.new_zeros(size), 1.0))
        pyro.sample("y", dist.Normal(z, 1.0), obs=y[idx])


def discrete(y: torch.Tensor) -> None:
    """A continuous ``loc`` and a Bernoulli ``z_i`` per row (a two-component
    mixture); ``z`` is enumerable."""
    loc = pyro.sample("loc", dist.Normal(y.new_zeros(()), 2.0))
    with pyro.plate("data", len(y)):
        z = pyro.sample("z", dist.Bernoulli(y.new_full((), 0.3)))
        pyro.sample("y", dist.Normal(loc + 2.0 * z - 1.0, 1.0), obs=y)


def discrete_only(y: torch.Tensor) -> None:
    """A Bernoulli ``z_i`` per row and nothing continuous."""
    with pyro.plate("data", len(y)):
        z = pyro.sample("z", dist.Bernoulli(y.new_full((), 0.3)))
        pyro.sample("y", dist.Normal(2.0 * z - 1.0, 1.0), obs=y)


def discrete_subsampled(y: torch.Tensor, size: int = 3) -> None:
    """:func:`discrete_only` with the plate ``data`` subsampled to ``size`` rows."""
    with pyro.plate("data", len(y), subsample_size=size) as idx:
        z = pyro.sample("z", dist.Bernoulli(y.new_full((), 0.3)))
        pyro.sample("y", dist.Normal(2.0 * z - 1.0, 1.0), obs=y[idx])


@attrs.frozen
class ModelCase:
    """A model, how to call it, and what is known about its posterior.

    Attributes
    ----------
    name : str
        Short name used in test ids (``"conjugate"``, ...).
    model : callable
        The Pyro model; called as ``model(y)``.
    discrete : bool
        Whether it has a discrete latent site.
    subsample : bool
        Whether one of its plates is subsampled.
    posterior : callable or None
        ``posterior(y) -> {site: (mean, sd)}`` where known in closed form.
    """

    name: str
    model: Callable[..., None]
    discrete: bool = False
    subsample: bool = False
    posterior: Callable[[torch.Tensor], dict] | None = None

    def args(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor]:
        """The model's arguments, in ``dtype``."""
        return (data(dtype),)


def _conjugate_posterior(y: torch.Tensor) -> dict:
    return {"z": (y / 2, torch.full_like(y, math.sqrt(0.5)))}


CASES = {
    c.name: c
    for c in (
        ModelCase("conjugate", conjugate, posterior=_conjugate_posterior),
        ModelCase("constrained", constrained),
        ModelCase("subsampled", subsampled, subsample=True),
        ModelCase("discrete", discrete, discrete=True),
        ModelCase("discrete_only", discrete_only, discrete=True),
        ModelCase(
            "discrete_subsampled", discrete_subsampled, discrete=True, subsample=True
        ),
    )
}


def case(name: str) -> ModelCase:
    """The :class:`ModelCase` called ``name``."""
    return CASES[name]
