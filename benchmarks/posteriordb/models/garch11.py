"""posteriordb ``garch-garch11``: a GARCH(1,1) model of a time series.

Stan model: ``y[t] ~ normal(mu, sigma[t])`` with ``sigma[1] = sigma1`` (data)
and ``sigma[t]^2 = alpha0 + alpha1 * (y[t-1] - mu)^2 + beta1 * sigma[t-1]^2``;
parameters ``mu`` (real), ``alpha0 > 0``, ``alpha1`` in (0, 1) and ``beta1`` in
(0, 1 - alpha1), all with flat (improper) priors.

data and reference draws: posteriordb (stan-dev/posteriordb), see ../ATTRIBUTION.md
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from scipy import stats

POSTERIOR = "garch-garch11"
PARAMS = ("mu", "alpha0", "alpha1", "beta1")
EXCLUDE = None


def _flat(support: constraints.Constraint) -> dist.ImproperUniform:
    return dist.ImproperUniform(support, batch_shape=(), event_shape=())


def model(T: int, y: torch.Tensor, sigma1: torch.Tensor) -> None:
    """The Stan model; ``T`` an int, ``y`` of shape ``(T,)``, ``sigma1`` a scalar."""
    mu = pyro.sample("mu", _flat(constraints.real))
    alpha0 = pyro.sample("alpha0", _flat(constraints.positive))
    alpha1 = pyro.sample("alpha1", _flat(constraints.interval(0.0, 1.0)))
    beta1 = pyro.sample("beta1", _flat(constraints.interval(0.0, 1.0 - alpha1)))
    # The variance recursion is sequential in t; T is small. Parameters may
    # carry batch dims (draws) left of the time plate: keep the last dim time.
    shock = (y[:-1] - mu) ** 2
    var = torch.as_tensor(sigma1, dtype=y.dtype) ** 2 * torch.ones_like(shock[..., :1])
    variances = [var]
    for t in range(1, T):
        var = alpha0 + alpha1 * shock[..., t - 1 : t] + beta1 * var
        variances.append(var)
    sigma = torch.cat(variances, dim=-1).sqrt()
    with pyro.plate("time", T):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


def stan_log_density(params: dict, data: dict) -> float:
    """Stan's log density on the unconstrained space, at constrained ``params``."""
    mu = float(params["mu"])
    alpha0 = float(params["alpha0"])
    alpha1 = float(params["alpha1"])
    beta1 = float(params["beta1"])
    y = np.asarray(data["y"], dtype=float)
    T = int(data["T"])
    sigma = np.empty(T)
    sigma[0] = float(data["sigma1"])
    for t in range(1, T):
        sigma[t] = np.sqrt(
            alpha0 + alpha1 * (y[t - 1] - mu) ** 2 + beta1 * sigma[t - 1] ** 2
        )
    target = stats.norm.logpdf(y, mu, sigma).sum()
    # Jacobians: alpha0 = exp(u); alpha1 in (0, 1); beta1 in (0, 1 - alpha1).
    upper = 1.0 - alpha1
    target += np.log(alpha0)
    target += np.log(alpha1 * (1.0 - alpha1))
    target += np.log(beta1 * (upper - beta1) / upper)
    return float(target)
