"""eight_schools-eight_schools_noncentered: the eight schools, noncentered.

Stan model: ``theta = mu + tau * theta_trans`` with ``theta_trans ~ normal(0,
1)`` (vector[J]), ``mu ~ normal(0, 5)``, ``tau ~ cauchy(0, 5)`` with
``tau > 0``, and ``y ~ normal(theta, sigma)``.

data and reference draws: posteriordb (stan-dev/posteriordb), see
../ATTRIBUTION.md

posteriordb's reference draws hold the transformed parameter ``theta``, not
the parameter ``theta_trans``; ``reference_from_draws`` recovers
``theta_trans = (theta - mu) / tau`` from the ``DRAW_PARAMS`` columns.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from scipy import stats

POSTERIOR = "eight_schools-eight_schools_noncentered"
PARAMS = ("theta_trans", "mu", "tau")
#: The columns of posteriordb's reference draws that ``PARAMS`` derive from.
DRAW_PARAMS = ("theta", "mu", "tau")
# Not a funnel in this form: theta_trans and mu look Gaussian and barely
# depend on tau; only log(tau) is skewed (a long left tail towards tau = 0,
# skewness about -1.6 in the reference draws).
EXCLUDE = None


def reference_from_draws(draws):
    """Map ``DRAW_PARAMS`` draws (``theta``, ``mu``, ``tau``) onto ``PARAMS``."""
    mu, tau = draws["mu"], draws["tau"]
    theta_trans = (draws["theta"] - mu[:, None]) / tau[:, None]
    return {"theta_trans": theta_trans, "mu": mu, "tau": tau}


def _float(x):
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def model(J, y, sigma):
    y, sigma = _float(y), _float(sigma)
    theta_trans = pyro.sample(
        "theta_trans", dist.Normal(y.new_zeros(J), 1.0).to_event(1)
    )
    mu = pyro.sample("mu", dist.Normal(y.new_zeros(()), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(y.new_full((), 5.0)))
    theta = mu[..., None] + tau[..., None] * theta_trans  # theta_trans: event dim
    # The schools are the event dim of theta_trans, so y is one (J,) event
    # rather than a plate: this stays right when the latents carry batch
    # dims (vectorised particles), where a plate over J would broadcast the
    # batch dims of theta_trans against it.
    pyro.sample("y", dist.Normal(theta, sigma).to_event(1), obs=y)


def stan_log_density(params, data):
    theta_trans = np.asarray(params["theta_trans"], dtype=float)
    mu = float(params["mu"])
    tau = float(params["tau"])
    y = np.asarray(data["y"], dtype=float)
    sigma = np.asarray(data["sigma"], dtype=float)
    theta = theta_trans * tau + mu
    target = stats.norm.logpdf(theta_trans, 0.0, 1.0).sum()
    target += stats.norm.logpdf(y, theta, sigma).sum()
    target += stats.norm.logpdf(mu, 0.0, 5.0)
    target += stats.cauchy.logpdf(tau, 0.0, 5.0)
    # tau = exp(u): log |d tau / d u| = log tau.
    return float(target + np.log(tau))
