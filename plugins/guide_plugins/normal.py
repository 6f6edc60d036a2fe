"""The ``normal`` family: :class:`AutoNormal`, a mean-field Normal guide by site."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn.module import PyroModule, PyroParam

from guide_core import AutoGuide, Capabilities, GuideSpec, hookimpl, init_to_feasible
from guide_core.plugin import (
    GaussianStart,
    SiteFacts,
    assign_param,
    get_nested,
    location_steps,
    mean_field_scale,
    sample_constrained,
    scale_steps,
    set_nested,
    validate_init_scale,
)

__all__ = ["AutoNormal", "register_guides"]


class AutoNormal(AutoGuide):
    """A mean-field guide: an independent Normal for every latent site.

    Each site's unconstrained value gets its own ``loc`` and ``scale`` (param
    names ``AutoNormal.locs.<site>`` and ``AutoNormal.scales.<site>``), so the
    posterior of a site can be read by name. The guide does not depend on the
    model's arguments. It is the same distribution as ``AutoDiagonalNormal``,
    organised by site; under ``TraceMeanField_ELBO`` unconstrained sites get an
    analytic KL divergence against their prior.

    Parameters
    ----------
    model : callable
        A Pyro model.
    init_loc_fn : callable
        Per-site initialization strategy for the locations (an ``init_to_*``).
    init_scale : float
        Initial standard deviation of every unconstrained latent (> 0).
    create_plates : callable, optional
        Returns the plates to use for data subsampling; see :class:`AutoGuide`.
    """

    scale_constraint = constraints.softplus_positive

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Callable = init_to_feasible,
        init_scale: float = 0.1,
        create_plates: Callable | None = None,
    ):
        self.init_loc_fn = init_loc_fn
        self._init_scale = validate_init_scale(init_scale)
        model = self._wrap_init(model, init_loc_fn)
        super().__init__(model, create_plates=create_plates)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        self._event_dims: dict[str, int] = {}
        self.locs = PyroModule()
        self.scales = PyroModule()
        for name, site in self._mean_field_sites().items():
            event_dim = site.unconstrained_event_dim
            self._event_dims[name] = event_dim
            loc = site.init_unconstrained()
            scale = torch.full_like(loc, self._init_scale)
            set_nested(self.locs, name, PyroParam(loc, constraints.real, event_dim))
            set_nested(
                self.scales, name, PyroParam(scale, self.scale_constraint, event_dim)
            )

    def _mean_field_sites(self) -> dict[str, SiteFacts]:
        """The sites with a ``loc`` and ``scale`` param each: every continuous
        one here; a subclass may give some sites their Normal another way."""
        return self._prototype.continuous()

    def _warm_start(self, start: GaussianStart) -> dict[str, torch.Tensor]:
        # The mean-field optimum for a Gaussian posterior: its mean, and the
        # conditional sds 1 / sqrt(diag(precision)).
        conditional = mean_field_scale(start)
        steps = {}
        for name in self._sites():
            lo, hi, shape = start.slices[name]
            scale = conditional[lo:hi].reshape(shape)
            assign_param(self, f"locs.{name}", start.site_loc(name))
            assign_param(self, f"scales.{name}", scale)
            steps[f"locs.{name}"] = location_steps(start.covariance[lo:hi, lo:hi])
            steps[f"scales.{name}"] = scale_steps(scale)
        return steps

    def _read_inputs(self, args: tuple, kwargs: dict) -> None:
        """Read what a call's ``loc`` and ``scale`` depend on (nothing here: a
        subclass whose sites' Normals depend on the arguments reads them)."""

    def _get_loc_and_scale(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return get_nested(self.locs, name), get_nested(self.scales, name)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Sample every latent site; return ``{site name: value}``."""
        self._ensure_setup(*args, **kwargs)
        self._create_plates(*args, **kwargs)
        self._read_inputs(args, kwargs)
        result = {}
        for name, site in self._sites().items():
            with self._site_plates(site):
                loc, scale = self._get_loc_and_scale(name)
                base = dist.Normal(loc, scale).to_event(self._event_dims[name])
                result[name] = sample_constrained(site, base)
        return result

    def _unconstrained_marginals(
        self, *args: Any, **kwargs: Any
    ) -> dict[str, dist.Normal]:
        return {n: dist.Normal(*self._get_loc_and_scale(n)) for n in self._sites()}


@hookimpl
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register ``auto_normal``."""
    register(
        GuideSpec(
            name="auto_normal",
            factory=AutoNormal,
            family="normal",
            summary="Mean-field Normal per site in the unconstrained space.",
            capabilities=Capabilities(subsample=True, jit=True, mean_field=True),
        )
    )
