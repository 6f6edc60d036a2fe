"""Normal messenger guides: :class:`AutoNormalMessenger` and
:class:`AutoHierarchicalNormalMessenger`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch.distributions import Distribution, Transform

from ._params import DEFAULT_INIT, SiteParamMessenger

__all__ = ["AutoHierarchicalNormalMessenger", "AutoNormalMessenger"]


def _normal_posterior(
    loc: torch.Tensor, scale: torch.Tensor, transform: Transform
) -> Distribution:
    # A Normal in the unconstrained space, pushed into the site's support.
    base = dist.Normal(loc, scale).to_event(transform.domain.event_dim)
    return dist.TransformedDistribution(base, transform.with_cache())


class AutoNormalMessenger(SiteParamMessenger):
    """A messenger guide with a mean-field Normal posterior at every site.

    At each latent site the posterior is a Normal in the site's unconstrained
    space (param names ``locs.<site>`` and ``scales.<site>``) pushed into the
    support: the same distribution as ``AutoNormal``, but written as an effect
    handler so a subclass can replace the posterior of chosen sites::

        class MyGuide(AutoNormalMessenger):
            def get_posterior(self, name, prior):
                if name == "c":
                    bias = pyro.param("c_bias", lambda: torch.zeros(()))
                    scale = pyro.param("c_scale", lambda: torch.ones(()),
                                       constraint=constraints.positive)
                    # upstream values (self.upstream_value("a")) or the prior,
                    # which is conditioned on them, may enter the posterior
                    return dist.Normal(bias + prior.loc, scale)
                return super().get_posterior(name, prior)  # the rest: Normal

    A site's parameters are created the first time the model samples it; state
    loaded before then is applied at that moment (see ``load_state_dict``).
    ``median`` and ``quantiles`` run the model with each site at that summary
    of its posterior given the upstream values, also for overridden sites.

    Parameters
    ----------
    model : callable
        A Pyro model.
    init_loc_fn : callable
        Per-site initialization strategy for the locations (an ``init_to_*``).
    init_scale : float
        Initial standard deviation of every unconstrained latent (> 0).
    amortized_plates : tuple of str
        Plates across which the parameters are shared rather than created per
        element, e.g. a subsampled data plate of local latents.
    """

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Callable = DEFAULT_INIT,
        init_scale: float = 0.1,
        amortized_plates: tuple[str, ...] = (),
    ):
        super().__init__(
            model,
            init_loc_fn=init_loc_fn,
            init_scale=init_scale,
            amortized_plates=amortized_plates,
        )

    def get_posterior(
        self, name: str, prior: Distribution
    ) -> Distribution | torch.Tensor:
        """Return the posterior of site ``name`` given its (conditioned) prior."""
        transform = self._transform(name, prior)
        loc, scale = self._get_params(name, prior)
        return _normal_posterior(loc, scale, transform)

    def _get_params(self, name: str, prior: Distribution) -> tuple[torch.Tensor, ...]:
        if not self._has_param("locs", name):
            transform = self._transform(name, prior)
            event_dim = transform.domain.event_dim
            loc = self._init_unconstrained(name, prior, transform)
            scale = torch.full_like(loc, self._init_scale)
            self._new_param("locs", name, loc, constraints.real, event_dim)
            self._new_param("scales", name, scale, constraints.positive, event_dim)
        return self._param("locs", name), self._param("scales", name)


class AutoHierarchicalNormalMessenger(AutoNormalMessenger):
    """A Normal messenger guide whose location follows the conditioned prior.

    At a hierarchical site the unconstrained posterior is
    ``Normal(loc + weight * transform.inv(prior.mean), scale)``, where
    ``prior.mean`` is the prior's mean given the values sampled upstream, so
    the posterior moves with its parents as the prior does; ``weight`` (param
    ``weights.<site>``) is learned, element-wise by default
    (``weight_type = "scalar"`` in a subclass learns one weight per site).
    Other sites get :class:`AutoNormalMessenger`'s posterior. The prior of a
    hierarchical site must have a finite mean.

    Parameters
    ----------
    model : callable
        A Pyro model.
    init_loc_fn : callable
        Per-site initialization strategy for the locations (an ``init_to_*``).
    init_scale : float
        Initial standard deviation of every unconstrained latent (> 0).
    amortized_plates : tuple of str
        Plates across which the parameters are shared (for subsampling).
    init_weight : float
        Initial weight of the prior mean in each posterior location (> 0).
    hierarchical_sites : list of str, optional
        The sites that follow their prior; None means every site. At a site
        with no upstream dependency the guide then learns an offset from the
        prior mean.
    """

    weight_type = "element-wise"
    _param_groups = ("locs", "scales", "weights")

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Callable = DEFAULT_INIT,
        init_scale: float = 0.1,
        amortized_plates: tuple[str, ...] = (),
        init_weight: float = 1.0,
        hierarchical_sites: Sequence[str] | None = None,
    ):
        if isinstance(init_weight, bool) or not isinstance(init_weight, (int, float)):
            raise TypeError(f"'init_weight' must be a positive float: {init_weight!r}")
        if not init_weight > 0:
            raise ValueError(f"'init_weight' must be > 0: {init_weight!r}")
        if isinstance(hierarchical_sites, str):
            raise TypeError(
                "'hierarchical_sites' must be a list of site names, e.g. "
                f"[{hierarchical_sites!r}], not the string {hierarchical_sites!r}"
            )
        if self.weight_type not in ("element-wise", "scalar"):
            raise ValueError(
                f"weight_type must be 'element-wise' or 'scalar': {self.weight_type!r}"
            )
        super().__init__(
            model,
            init_loc_fn=init_loc_fn,
            init_scale=init_scale,
            amortized_plates=amortized_plates,
        )
        self._init_weight = float(init_weight)
        self._hierarchical_sites = (
            None if hierarchical_sites is None else list(hierarchical_sites)
        )

    def _is_hierarchical(self, name: str) -> bool:
        return self._hierarchical_sites is None or name in self._hierarchical_sites

    def get_posterior(
        self, name: str, prior: Distribution
    ) -> Distribution | torch.Tensor:
        """Return the posterior of site ``name`` given its (conditioned) prior."""
        if not self._is_hierarchical(name):
            return super().get_posterior(name, prior)
        transform = self._transform(name, prior)
        loc, scale, weight = self._get_params(name, prior)
        loc = loc + transform.inv(prior.mean) * weight
        return _normal_posterior(loc, scale, transform)

    def _prior_mean(self, name: str, prior: Distribution) -> torch.Tensor:
        try:
            mean = prior.mean
        except NotImplementedError:
            mean = None
        if mean is None or not bool(torch.isfinite(mean).all()):
            raise ValueError(
                f"site {name!r} has a prior without a finite mean "
                f"({type(prior).__name__}), which {type(self).__name__} needs at "
                "a hierarchical site; pass hierarchical_sites=[...] listing the "
                f"sites that should follow their prior, without {name!r}"
            )
        return mean

    def _get_params(self, name: str, prior: Distribution) -> tuple[torch.Tensor, ...]:
        if not self._is_hierarchical(name):
            return super()._get_params(name, prior)
        if not self._has_param("locs", name):
            transform = self._transform(name, prior)
            event_dim = transform.domain.event_dim
            loc = self._init_unconstrained(name, prior, transform)
            scale = torch.full_like(loc, self._init_scale)
            with torch.no_grad():
                if self.weight_type == "scalar":
                    weight, weight_dim = torch.full((), self._init_weight), None
                else:
                    weight, weight_dim = (
                        torch.full_like(loc, self._init_weight),
                        event_dim,
                    )
                mean = transform.inv(self._prior_mean(name, prior))
                loc = loc - weight * self._adjust_plates(mean, event_dim)
            self._new_param("locs", name, loc, constraints.real, event_dim)
            self._new_param("scales", name, scale, constraints.positive, event_dim)
            self._new_param("weights", name, weight, constraints.positive, weight_dim)
        return (
            self._param("locs", name),
            self._param("scales", name),
            self._param("weights", name),
        )
