"""Shared steps of guides that work in the unconstrained space.

Every family that samples an unconstrained value and hands the model a
constrained one does it through :func:`sample_constrained`, so the log-det term
and its masking rule are written once.
"""

from __future__ import annotations

import functools
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import sum_rightmost
from pyro.nn.module import PyroModule
from torch.distributions import Distribution, kl_divergence, register_kl

from .dependent_support import record_value, transform_of
from .prototype import SiteFacts

__all__ = [
    "GuideDelta",
    "assign_param",
    "constrain",
    "emit_constrained",
    "get_nested",
    "sample_constrained",
    "set_nested",
]


def set_nested(module: torch.nn.Module, name: str, value: Any) -> None:
    """Set ``module.a.b.c = value`` for ``name="a.b.c"``, making the missing
    intermediate modules, so a site named ``"a.b"`` gets param name ``a.b``."""
    *path, leaf = name.split(".")
    for part in path:
        child = getattr(module, part, None)
        if child is None:
            child = PyroModule()
            setattr(module, part, child)
        module = child
    setattr(module, leaf, value)


def get_nested(module: torch.nn.Module, name: str) -> Any:
    """Return ``module.a.b.c`` for ``name="a.b.c"``."""
    return functools.reduce(getattr, name.split("."), module)


class GuideDelta(dist.Delta):
    """The point mass a guide emits at a site, remembering where it came from.

    It behaves exactly like :class:`pyro.distributions.Delta` (same samples and
    log-density), but it keeps the unconstrained distribution ``base`` and the
    draw ``unconstrained`` it was pushed from. ``TraceMeanField_ELBO`` then
    gets an analytic KL divergence against the prior wherever one exists (an
    unconstrained site with, e.g., a Normal prior) and otherwise a correct
    Monte Carlo one, log-det term included.
    """

    def __init__(
        self,
        v: torch.Tensor,
        log_density: Any = 0.0,
        event_dim: int = 0,
        *,
        base: Distribution | None = None,
        unconstrained: torch.Tensor | None = None,
        identity: bool = False,
    ):
        super().__init__(v, log_density=log_density, event_dim=event_dim)
        self.base, self.unconstrained, self.identity = base, unconstrained, identity

    def expand(self, batch_shape: Any, _instance: Any = None) -> GuideDelta:
        new = self._get_checked_instance(GuideDelta, _instance)
        new = super().expand(batch_shape, _instance=new)
        batch_shape = torch.Size(batch_shape)
        new.base = new.unconstrained = None
        if self.base is not None:
            new.base = self.base.expand(batch_shape)
            new.unconstrained = self.unconstrained.expand(
                batch_shape + self.base.event_shape
            )
        new.identity = self.identity
        return new


@register_kl(GuideDelta, Distribution)
@register_kl(GuideDelta, dist.Distribution)  # more specific than Pyro's Delta rule
def _kl_guide_delta(p: GuideDelta, q: Distribution) -> torch.Tensor:
    # The auxiliary site adds +log base(u) to the ELBO's entropy term, so the
    # analytic form subtracts it here: the sum is exactly -KL(base || prior).
    if p.identity and p.base is not None:
        try:
            return kl_divergence(p.base, q) - p.base.log_prob(p.unconstrained)
        except NotImplementedError:
            pass
    return p.log_density - q.log_prob(p.v)


def constrain(
    site: SiteFacts, u: torch.Tensor, log_density: Any = 0.0, *, log_det: bool = True
) -> tuple[torch.Tensor, Any]:
    """Map an unconstrained value ``u`` of ``site`` to its support.

    Returns ``(value, log_density)``: ``log_density`` plus the log-det of the
    inverse map, summed over the site's event dims (nothing is added for an
    identity bijection, under ``poutine.mask(mask=False)``, or when
    ``log_det=False``, e.g. for a point-mass conditional).
    """
    transform = transform_of(site)  # given the values drawn before it, if need be
    value = transform(u)
    record_value(site.name, value)
    if log_det and value is not u and poutine.get_mask() is not False:
        ladj = transform.inv.log_abs_det_jacobian(value, u)
        ladj = sum_rightmost(ladj, ladj.dim() - value.dim() + site.event_dim)
        log_density = log_density + ladj
    return value, log_density


def sample_constrained(
    site: SiteFacts, base: Distribution, *, aux_name: str | None = None
) -> torch.Tensor:
    """Sample ``base`` in the unconstrained space, then emit the site's value.

    Samples the auxiliary site ``<name>_unconstrained`` from ``base`` and hands
    the draw to :func:`emit_constrained`. Returns the constrained value.
    """
    aux = aux_name or f"{site.name}_unconstrained"
    u = pyro.sample(aux, base, infer={"is_auxiliary": True})
    return emit_constrained(site, u, base=base)


def emit_constrained(
    site: SiteFacts, u: torch.Tensor, *, base: Distribution | None = None
) -> torch.Tensor:
    """Map an unconstrained draw ``u`` to the site's support and sample the site.

    The site is sampled as a point mass at the constrained value whose
    log-density is the log-det of the inverse map (see :func:`constrain`), so
    the ELBO sees the density of the constrained value. ``base`` is the
    distribution ``u`` was drawn from when it is the site's own (it enables
    analytic KL terms); families that draw one joint latent for all sites
    leave it out. Returns the constrained value.
    """
    value, log_density = constrain(site, u)
    point = GuideDelta(
        value,
        log_density=log_density,
        event_dim=site.event_dim,
        base=base,
        unconstrained=u,
        identity=base is not None and value is u,
    )
    return pyro.sample(site.name, point)


@torch.no_grad()
def assign_param(module: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    """Write ``value`` (constrained) into the existing parameter ``a.b.c``.

    The tensor is updated in place, so Pyro's param store, which holds the
    same (unconstrained) tensor, sees the new value; a ``PyroParam`` is
    written through the inverse of its constraint's bijection.
    """
    *path, leaf = name.split(".")
    for part in path:
        module = getattr(module, part)
    pyro_params = getattr(module, "_pyro_params", {})
    if leaf in pyro_params:
        constraint = pyro_params[leaf][0]
        free = module._parameters[f"{leaf}_unconstrained"]
        free.copy_(torch.distributions.transform_to(constraint).inv(value.to(free)))
    else:
        param = module._parameters[leaf]
        param.copy_(value.to(param))
