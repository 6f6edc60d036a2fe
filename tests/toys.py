"""Small guides built on the core protocols, shared by the core's tests."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn.module import PyroParam
from torch.distributions import biject_to

import guide_core
from guide_core import AutoGuide, init_to_median


class AutoToy(AutoGuide):
    """A tiny guide for registry tests: a point mass at the init value."""

    def __init__(self, model, *, init_loc_fn=guide_core.init_to_median, scale=1.0):
        self.init_loc_fn = init_loc_fn
        super().__init__(self._wrap_init(model, init_loc_fn))
        self.scale = scale

    def forward(self, *args, **kwargs):
        self._ensure_setup(*args, **kwargs)
        return {
            n: pyro.sample(n, dist.Delta(s.value, event_dim=s.event_dim))
            for n, s in self._sites().items()
        }

    def _median(self, *args, **kwargs):
        return {n: s.value for n, s in self._sites().items()}


class AutoPoint(AutoGuide):
    """A test guide: a learnable point per site in the unconstrained space,
    with a fixed unit-scale Normal marginal for median/quantiles."""

    def __init__(self, model, *, init_loc_fn=init_to_median, create_plates=None):
        self.init_loc_fn = init_loc_fn
        super().__init__(
            self._wrap_init(model, init_loc_fn), create_plates=create_plates
        )

    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        for name, site in self._sites().items():
            u = site.init_unconstrained()
            setattr(
                self, name, PyroParam(u, constraints.real, site.unconstrained_event_dim)
            )

    def forward(self, *args, **kwargs):
        self._ensure_setup(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        assert set(self._prototype.plates) <= set(plates)
        out = {}
        for name, site in self._sites().items():
            with self._site_plates(site):
                u = getattr(self, name)
                value = site.transform(u)
                out[name] = pyro.sample(
                    name, dist.Delta(value, event_dim=site.event_dim)
                )
        return out

    def _unconstrained_marginals(self, *args, **kwargs):
        return {n: dist.Normal(getattr(self, n), 1.0) for n in self._sites()}


class PointMessenger(guide_core.AutoMessenger):
    """A test messenger: a Normal with a learnable loc per site (unit scale in the
    unconstrained space), created lazily with the core's plate shaping."""

    def get_posterior(self, name, prior):
        transform = biject_to(prior.support)
        event_dim = transform.codomain.event_dim
        if not hasattr(self, f"{name}_loc"):
            with torch.no_grad():
                init = transform.inv(prior.sample())
                init = self._adjust_plates(torch.zeros_like(init), event_dim)
            setattr(self, f"{name}_loc", PyroParam(init, event_dim=event_dim))
        loc = getattr(self, f"{name}_loc")
        base = dist.Normal(loc, 1.0).to_event(transform.domain.event_dim)
        return dist.TransformedDistribution(base, transform.with_cache())
