"""nes1980-nes: party identification regressed on ideology, race, age, etc.

Stan model: ``partyid7 ~ normal(X * beta, sigma)`` where ``X`` holds an
intercept, ``real_ideo``, ``race_adj``, three age-category indicators (from
``age_discrete``), ``educ1``, ``gender`` and ``income``; flat priors on
``beta`` (vector[9]) and on ``sigma > 0``.

data and reference draws: posteriordb (stan-dev/posteriordb), see
../ATTRIBUTION.md
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from scipy import stats

POSTERIOR = "nes1980-nes"
PARAMS = ("beta", "sigma")
EXCLUDE = None


def _float(x):
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def model(
    N,
    partyid7,
    real_ideo,
    race_adj,
    educ1,
    gender,
    income,
    age_discrete,
    **unused,
):
    partyid7 = _float(partyid7)
    age = torch.as_tensor(age_discrete)
    # The predictors after the intercept, in Stan's order.
    columns = [
        _float(real_ideo),
        _float(race_adj),
        (age == 2).to(partyid7.dtype),
        (age == 3).to(partyid7.dtype),
        (age == 4).to(partyid7.dtype),
        _float(educ1),
        _float(gender),
        _float(income),
    ]
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real_vector, (), (9,)))
    sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    mean = beta[..., 0]
    for j, column in enumerate(columns, start=1):
        mean = mean + beta[..., j] * column
    with pyro.plate("data", N):
        pyro.sample("partyid7", dist.Normal(mean, sigma), obs=partyid7)


def stan_log_density(params, data):
    beta = np.asarray(params["beta"], dtype=float)
    sigma = float(params["sigma"])
    age = np.asarray(data["age_discrete"])
    mean = (
        beta[0]
        + beta[1] * np.asarray(data["real_ideo"], dtype=float)
        + beta[2] * np.asarray(data["race_adj"], dtype=float)
        + beta[3] * (age == 2)
        + beta[4] * (age == 3)
        + beta[5] * (age == 4)
        + beta[6] * np.asarray(data["educ1"], dtype=float)
        + beta[7] * np.asarray(data["gender"], dtype=float)
        + beta[8] * np.asarray(data["income"], dtype=float)
    )
    partyid7 = np.asarray(data["partyid7"], dtype=float)
    target = stats.norm.logpdf(partyid7, mean, sigma).sum()
    return float(target + np.log(sigma))
