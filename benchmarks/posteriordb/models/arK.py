"""arK-arK: an AR(K) time series model.

Stan model: ``y[t] ~ normal(alpha + sum_k beta[k] * y[t - k], sigma)`` for
``t > K``, with ``alpha ~ normal(0, 10)``, ``beta ~ normal(0, 10)``
(array[K]), ``sigma ~ cauchy(0, 2.5)`` and ``sigma > 0``.

data and reference draws: posteriordb (stan-dev/posteriordb), see
../ATTRIBUTION.md
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from scipy import stats

POSTERIOR = "arK-arK"
PARAMS = ("alpha", "beta", "sigma")
EXCLUDE = None


def _float(x):
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def model(K, T, y):
    y = _float(y)
    alpha = pyro.sample("alpha", dist.Normal(y.new_zeros(()), 10.0))
    beta = pyro.sample("beta", dist.Normal(y.new_zeros(K), 10.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfCauchy(y.new_full((), 2.5)))
    # Loop over the K lags only: y[t - k] for t = K+1..T is y[K - k : T - k].
    mu = alpha + y.new_zeros(T - K)
    for k in range(1, K + 1):
        mu = mu + beta[..., k - 1] * y[K - k : T - k]
    with pyro.plate("time", T - K):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y[K:])


def stan_log_density(params, data):
    alpha = float(params["alpha"])
    beta = np.asarray(params["beta"], dtype=float)
    sigma = float(params["sigma"])
    y = np.asarray(data["y"], dtype=float)
    K, T = int(data["K"]), int(data["T"])
    target = stats.norm.logpdf(alpha, 0.0, 10.0)
    target += stats.norm.logpdf(beta, 0.0, 10.0).sum()
    target += stats.cauchy.logpdf(sigma, 0.0, 2.5)
    for t in range(K, T):
        mu = alpha + sum(beta[k] * y[t - k - 1] for k in range(K))
        target += stats.norm.logpdf(y[t], mu, sigma)
    return float(target + np.log(sigma))
