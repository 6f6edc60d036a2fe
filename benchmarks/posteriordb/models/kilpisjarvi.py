"""posteriordb ``kilpisjarvi_mod-kilpisjarvi``: a linear trend of temperatures.

Stan model: ``y ~ normal(alpha + beta * x, sigma)`` with
``alpha ~ normal(pmualpha, psalpha)``, ``beta ~ normal(pmubeta, psbeta)`` (prior
means and sds given as data) and ``sigma > 0`` with a flat (improper) prior.

data and reference draws: posteriordb (stan-dev/posteriordb), see ../ATTRIBUTION.md
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from scipy import stats

POSTERIOR = "kilpisjarvi_mod-kilpisjarvi"
PARAMS = ("alpha", "beta", "sigma")
EXCLUDE = None


def model(
    N: int,
    x: torch.Tensor,
    y: torch.Tensor,
    xpred: float,
    pmualpha: float,
    psalpha: float,
    pmubeta: float,
    psbeta: float,
) -> None:
    """The Stan model; ``x`` (years, integers) and ``y`` of shape ``(N,)``.

    ``xpred`` is data of the Stan program used only by its generated quantities.
    """
    del xpred
    dtype = y.dtype

    def as_float(value):
        return torch.as_tensor(value, dtype=dtype)

    alpha = pyro.sample("alpha", dist.Normal(as_float(pmualpha), as_float(psalpha)))
    beta = pyro.sample("beta", dist.Normal(as_float(pmubeta), as_float(psbeta)))
    flat = dist.ImproperUniform(constraints.positive, batch_shape=(), event_shape=())
    sigma = pyro.sample("sigma", flat)
    xf = x.to(dtype)
    with pyro.plate("data", N):
        pyro.sample(
            "y",
            dist.Normal(alpha + beta * xf, sigma),
            obs=y,
        )


def stan_log_density(params: dict, data: dict) -> float:
    """Stan's log density on the unconstrained space, at constrained ``params``."""
    alpha = float(params["alpha"])
    beta = float(params["beta"])
    sigma = float(params["sigma"])
    x = np.asarray(data["x"], dtype=float)
    y = np.asarray(data["y"], dtype=float)
    target = stats.norm.logpdf(alpha, float(data["pmualpha"]), float(data["psalpha"]))
    target += stats.norm.logpdf(beta, float(data["pmubeta"]), float(data["psbeta"]))
    target += stats.norm.logpdf(y, alpha + beta * x, sigma).sum()
    target += np.log(sigma)  # Jacobian of sigma = exp(u)
    return float(target)
