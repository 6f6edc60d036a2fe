"""earnings-logearn_interaction: log earnings on height, sex and their product.

Stan model: ``log(earn) ~ normal(beta[1] + beta[2] * height + beta[3] * male
+ beta[4] * height .* male, sigma)`` with flat priors on ``beta``
(vector[4]) and on ``sigma > 0``.

data and reference draws: posteriordb (stan-dev/posteriordb), see
../ATTRIBUTION.md
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from scipy import stats

POSTERIOR = "earnings-logearn_interaction"
PARAMS = ("beta", "sigma")
EXCLUDE = None


def _float(x):
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def model(N, earn, height, male):
    earn, height, male = _float(earn), _float(height), _float(male)
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real_vector, (), (4,)))
    sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    mean = (
        beta[..., 0]
        + beta[..., 1] * height
        + beta[..., 2] * male
        + beta[..., 3] * height * male
    )
    with pyro.plate("data", N):
        pyro.sample("log_earn", dist.Normal(mean, sigma), obs=earn.log())


def stan_log_density(params, data):
    beta = np.asarray(params["beta"], dtype=float)
    sigma = float(params["sigma"])
    log_earn = np.log(np.asarray(data["earn"], dtype=float))
    height = np.asarray(data["height"], dtype=float)
    male = np.asarray(data["male"], dtype=float)
    inter = height * male
    mean = beta[0] + beta[1] * height + beta[2] * male + beta[3] * inter
    target = stats.norm.logpdf(log_earn, mean, sigma).sum()
    return float(target + np.log(sigma))
