"""kidiq-kidscore_momiq: child test score regressed on the mother's IQ.

Stan model: ``kid_score ~ normal(beta[1] + beta[2] * mom_iq, sigma)`` with a
flat prior on ``beta`` (vector[2]) and ``sigma ~ cauchy(0, 2.5)``,
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

POSTERIOR = "kidiq-kidscore_momiq"
PARAMS = ("beta", "sigma")
EXCLUDE = None


def _float(x):
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def model(N, kid_score, mom_iq, **unused):
    kid_score, mom_iq = _float(kid_score), _float(mom_iq)
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real_vector, (), (2,)))
    sigma = pyro.sample("sigma", dist.HalfCauchy(mom_iq.new_full((), 2.5)))
    with pyro.plate("data", N):
        pyro.sample(
            "kid_score",
            dist.Normal(beta[..., 0] + beta[..., 1] * mom_iq, sigma),
            obs=kid_score,
        )


def stan_log_density(params, data):
    beta = np.asarray(params["beta"], dtype=float)
    sigma = float(params["sigma"])
    kid_score = np.asarray(data["kid_score"], dtype=float)
    mom_iq = np.asarray(data["mom_iq"], dtype=float)
    target = stats.cauchy.logpdf(sigma, 0.0, 2.5)
    target += stats.norm.logpdf(kid_score, beta[0] + beta[1] * mom_iq, sigma).sum()
    return float(target + np.log(sigma))
