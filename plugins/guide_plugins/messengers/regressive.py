"""The regressive messenger guide: :class:`AutoRegressiveMessenger`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch.distributions import Distribution, Transform

from guide_core.plugin import as_quantiles, distribution_median, distribution_quantiles

from ._params import DEFAULT_INIT, SiteParamMessenger

__all__ = ["AutoRegressiveMessenger", "unconstrained_prior_quantile"]

#: Prior draws behind a quantile of a prior that has no inverse CDF.
NUM_QUANTILE_DRAWS = 4096


def _elementwise(d: Distribution) -> Distribution:
    while isinstance(d, (dist.Independent, torch.distributions.Independent)) or (
        isinstance(d, dist.MaskedDistribution)
    ):
        d = d.base_dist
    return d


def _sorted_quantile(draws: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    # Linear interpolation between order statistics along dim 0 (like
    # torch.quantile, without its input-size limit).
    ordered = draws.sort(dim=0).values
    position = q.to(draws.dtype) * (draws.shape[0] - 1)
    low = position.floor().long().clamp(max=draws.shape[0] - 1)
    high = (low + 1).clamp(max=draws.shape[0] - 1)
    frac = position - low.to(draws.dtype)
    return ordered[low] + frac * (ordered[high] - ordered[low])


@torch.no_grad()
def unconstrained_prior_quantile(
    prior: Distribution, transform: Transform, q: torch.Tensor
) -> torch.Tensor:
    """Return the elementwise level-``q`` quantile of ``transform.inv(x)``, x ~ prior.

    Exact when the support's bijection is elementwise and monotone and the
    prior has an inverse CDF (Normal, LogNormal, HalfCauchy, Uniform, ...);
    otherwise (Gamma, Beta, Dirichlet, ...) estimated from
    ``NUM_QUANTILE_DRAWS`` prior draws made with a fixed seed, leaving the
    global random state untouched.
    """
    shape = prior.batch_shape + prior.event_shape
    try:
        sign = transform.sign  # raises for non-elementwise bijections
        level = 0.5 + sign * (q - 0.5)  # a decreasing map swaps the tails
        return transform.inv(_elementwise(prior).icdf(level).expand(shape))
    except NotImplementedError:
        pass
    device = q.device
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(0)
        draws = prior.sample((NUM_QUANTILE_DRAWS,))
    return _sorted_quantile(transform.inv(draws), q)


class AutoRegressiveMessenger(SiteParamMessenger):
    """A messenger guide whose posterior is a learned affine map of the prior.

    At each site a draw of the prior, given the values sampled upstream, is
    taken to the unconstrained space, scaled by ``scales.<site>`` and shifted
    by ``locs.<site>`` there, and mapped back into the support. The posterior
    thus keeps the model's own dependency structure. It starts close to the
    prior (``init_scale`` times it, plus ``1 - init_scale`` times the init
    location). A subclass may override ``get_posterior`` for chosen sites and
    call ``super().get_posterior(name, prior)`` for the rest. It does not
    support the ``Jit*`` ELBOs.

    ``median``/``quantiles`` (not in ``pyro.infer.autoguide``) run the model
    with each site at ``loc + scale * Q`` in the unconstrained space, ``Q``
    being the quantile of the unconstrained prior given the upstream values:
    exact for priors with an inverse CDF, else a fixed-seed estimate (see
    :func:`unconstrained_prior_quantile`).

    Parameters
    ----------
    model : callable
        A Pyro model.
    init_loc_fn : callable
        Per-site initialization strategy for the locations (an ``init_to_*``).
    init_scale : float
        Initial scale of the affine map, and weight of the prior in the
        initial posterior (> 0).
    amortized_plates : tuple of str
        Plates across which the parameters are shared (for subsampling).
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
        self._level: torch.Tensor | None = None

    def get_posterior(
        self, name: str, prior: Distribution
    ) -> Distribution | torch.Tensor:
        """Return the posterior of site ``name`` given its (conditioned) prior."""
        transform = self._transform(name, prior)
        loc, scale = self._get_params(name, prior)
        if self._level is not None:  # a median/quantile run: the value itself
            level = self._level.to(device=loc.device, dtype=loc.dtype)
            q = unconstrained_prior_quantile(prior, transform, level)
            return transform(loc + scale * q)
        event_dim = transform.domain.event_dim
        affine = dist.transforms.AffineTransform(
            loc, scale, event_dim=event_dim, cache_size=1
        )
        return dist.TransformedDistribution(
            prior, [transform.inv.with_cache(), affine, transform.with_cache()]
        )

    def _get_params(self, name: str, prior: Distribution) -> tuple[torch.Tensor, ...]:
        if not self._has_param("locs", name):
            transform = self._transform(name, prior)
            event_dim = transform.domain.event_dim
            loc = self._init_unconstrained(name, prior, transform)
            loc = loc * (1 - self._init_scale)
            scale = torch.full_like(loc, self._init_scale)
            self._new_param("locs", name, loc, constraints.real, event_dim)
            self._new_param("scales", name, scale, constraints.positive, event_dim)
        return self._param("locs", name), self._param("scales", name)

    # The generic summaries reduce a returned distribution; the affine map of a
    # prior without an inverse CDF cannot be reduced that way, so these runs
    # tell get_posterior the level and it returns the value itself.

    def _at_level(
        self, q: torch.Tensor, summary: Callable, args: tuple, kwargs: dict
    ) -> dict[str, torch.Tensor]:
        self._level = q
        try:
            return self._summarize(summary, args, kwargs)
        finally:
            self._level = None

    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Run the model at each site's posterior median; return its sample values.

        Like the other messengers, the result holds every sample site the model
        visits, each latent at its median given the medians upstream.
        """
        return self._at_level(torch.tensor(0.5), distribution_median, args, kwargs)

    def quantiles(
        self, quantiles: Sequence[float] | torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Return posterior quantiles of each latent site, levels on dim 0."""
        runs = []
        for q in as_quantiles(quantiles):
            summary = lambda d, q=q: distribution_quantiles(d, q.reshape(1))[0]  # noqa: E731
            runs.append(self._latent_values(self._at_level(q, summary, args, kwargs)))
        return {name: torch.stack([r[name] for r in runs]) for name in runs[0]}
