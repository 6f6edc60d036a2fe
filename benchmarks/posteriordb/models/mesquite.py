"""mesquite-logmesquite_logvolume: log leaf weight on log canopy volume.

Stan model: ``log(weight) ~ normal(beta[1] + beta[2] * log(diam1 .* diam2 .*
canopy_height), sigma)`` with flat priors on ``beta`` (vector[2]) and on
``sigma > 0``.

data and reference draws: posteriordb (stan-dev/posteriordb), see
../ATTRIBUTION.md
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from scipy import stats

POSTERIOR = "mesquite-logmesquite_logvolume"
PARAMS = ("beta", "sigma")
EXCLUDE = None


def _float(x):
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def model(N, weight, diam1, diam2, canopy_height, **unused):
    weight = _float(weight)
    log_volume = (_float(diam1) * _float(diam2) * _float(canopy_height)).log()
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real_vector, (), (2,)))
    sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    with pyro.plate("data", N):
        pyro.sample(
            "log_weight",
            dist.Normal(beta[..., 0] + beta[..., 1] * log_volume, sigma),
            obs=weight.log(),
        )


def stan_log_density(params, data):
    beta = np.asarray(params["beta"], dtype=float)
    sigma = float(params["sigma"])
    log_weight = np.log(np.asarray(data["weight"], dtype=float))
    volume = (
        np.asarray(data["diam1"], dtype=float)
        * np.asarray(data["diam2"], dtype=float)
        * np.asarray(data["canopy_height"], dtype=float)
    )
    mean = beta[0] + beta[1] * np.log(volume)
    target = stats.norm.logpdf(log_weight, mean, sigma).sum()
    return float(target + np.log(sigma))
