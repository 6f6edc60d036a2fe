"""posteriordb ``low_dim_gauss_mix-low_dim_gauss_mix``: a two-component normal mixture.

Stan model: ``y[n] ~ theta * normal(mu[1], sigma[1]) + (1 - theta) *
normal(mu[2], sigma[2])`` with ``mu`` ordered, ``mu ~ normal(0, 2)``,
``sigma ~ normal(0, 2)`` (two, ``> 0``) and ``theta ~ beta(5, 5)``.

data and reference draws: posteriordb (stan-dev/posteriordb), see ../ATTRIBUTION.md
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from scipy import special, stats

POSTERIOR = "low_dim_gauss_mix-low_dim_gauss_mix"
PARAMS = ("mu", "sigma", "theta")
EXCLUDE = None


class _SortedNormal(dist.TorchDistribution):
    """``size`` iid ``Normal(loc, scale)`` draws, sorted: an ordered vector.

    Its density is ``size!`` times the product of the normal densities on the
    ordered vectors, i.e. Stan's ``ordered`` parameter with an iid normal prior.
    """

    arg_constraints = {}
    support = constraints.ordered_vector
    has_rsample = False

    def __init__(self, loc: float, scale: float, size: int, validate_args=None):
        self.loc, self.scale, self.size = float(loc), float(scale), int(size)
        super().__init__(
            batch_shape=torch.Size(),
            event_shape=torch.Size([self.size]),
            validate_args=validate_args,
        )

    def sample(self, sample_shape=()):
        with torch.no_grad():
            draws = torch.randn(torch.Size(sample_shape) + self.event_shape)
            return (self.loc + self.scale * draws).sort(dim=-1).values

    def log_prob(self, value):
        normal = torch.distributions.Normal(
            torch.tensor(self.loc, dtype=value.dtype),
            torch.tensor(self.scale, dtype=value.dtype),
        )
        return normal.log_prob(value).sum(-1) + math.lgamma(self.size + 1)


def model(N: int, y: torch.Tensor) -> None:
    """The Stan model; ``y`` of shape ``(N,)``."""
    dtype = y.dtype
    mu = pyro.sample("mu", _SortedNormal(0.0, 2.0, 2))
    sigma = pyro.sample(
        "sigma", dist.HalfNormal(torch.full((2,), 2.0, dtype=dtype)).to_event(1)
    )
    theta = pyro.sample(
        "theta",
        dist.Beta(torch.tensor(5.0, dtype=dtype), torch.tensor(5.0, dtype=dtype)),
    )
    weights = torch.stack([theta, 1.0 - theta], dim=-1)
    with pyro.plate("data", N, dim=-1):
        # the components on the last dim; the batch dims of the draws (if
        # any) already sit left of the data plate
        mixture = dist.MixtureSameFamily(
            dist.Categorical(probs=weights), dist.Normal(mu, sigma)
        )
        pyro.sample("y", mixture, obs=y)


def stan_log_density(params: dict, data: dict) -> float:
    """Stan's log density on the unconstrained space, at constrained ``params``."""
    mu = np.asarray(params["mu"], dtype=float)
    sigma = np.asarray(params["sigma"], dtype=float)
    theta = float(params["theta"])
    y = np.asarray(data["y"], dtype=float)
    target = stats.norm.logpdf(sigma, 0.0, 2.0).sum()
    target += stats.norm.logpdf(mu, 0.0, 2.0).sum()
    target += stats.beta.logpdf(theta, 5.0, 5.0)
    target += special.logsumexp(
        [
            np.log(theta) + stats.norm.logpdf(y, mu[0], sigma[0]),
            np.log1p(-theta) + stats.norm.logpdf(y, mu[1], sigma[1]),
        ],
        axis=0,
    ).sum()
    # Jacobians: ordered mu (mu[2] = mu[1] + exp(u)), sigma = exp(u),
    # theta = inv_logit(u).
    target += np.log(mu[1] - mu[0])
    target += np.log(sigma).sum()
    target += np.log(theta * (1.0 - theta))
    return float(target)
