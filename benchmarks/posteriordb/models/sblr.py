"""posteriordb ``sblrc-blr``: a Bayesian linear regression.

Stan model: ``y ~ normal(X * beta, sigma)`` with ``beta ~ normal(0, 10)``
(a vector of ``D`` coefficients, no intercept) and ``sigma ~ normal(0, 10)``,
``sigma > 0`` (half-normal).

data and reference draws: posteriordb (stan-dev/posteriordb), see ../ATTRIBUTION.md
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from scipy import stats

POSTERIOR = "sblrc-blr"
PARAMS = ("beta", "sigma")
EXCLUDE = None


def model(N: int, D: int, X: torch.Tensor, y: torch.Tensor) -> None:
    """The Stan model; ``X`` of shape ``(N, D)``, ``y`` of shape ``(N,)``."""
    beta = pyro.sample(
        "beta", dist.Normal(torch.zeros(D, dtype=X.dtype), 10.0).to_event(1)
    )
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(10.0, dtype=X.dtype)))
    with pyro.plate("data", N):
        # batched draws of beta are (draws, 1, D): drop the data plate's 1
        rows = beta if beta.dim() == 1 else beta.reshape(beta.shape[:-2] + (D,))
        pyro.sample("y", dist.Normal(rows @ X.T, sigma), obs=y)


def stan_log_density(params: dict, data: dict) -> float:
    """Stan's log density on the unconstrained space, at constrained ``params``."""
    beta = np.asarray(params["beta"], dtype=float)
    sigma = float(params["sigma"])
    X = np.asarray(data["X"], dtype=float)
    y = np.asarray(data["y"], dtype=float)
    target = stats.norm.logpdf(beta, 0.0, 10.0).sum()
    target += stats.norm.logpdf(sigma, 0.0, 10.0)
    target += stats.norm.logpdf(y, X @ beta, sigma).sum()
    target += np.log(sigma)  # Jacobian of sigma = exp(u)
    return float(target)
