"""The ``discrete`` family: :class:`AutoDiscreteParallel`, mean-field discrete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pyro
import pyro.distributions as dist
import torch
from pyro.nn.module import PyroParam

from guide_core import AutoGuide, Capabilities, GuideSpec, hookimpl
from guide_core.plugin import SiteFacts, get_nested, set_nested

__all__ = ["AutoDiscreteParallel", "register_guides"]


@attrs.frozen
class _Family:
    """How to learn one kind of discrete prior: the parameters learned (taken
    from the prior as initial values), the ones kept as the prior has them,
    and the guide distribution built from both."""

    learned: tuple[str, ...]
    kept: tuple[str, ...] = ()
    build: Callable[..., dist.Distribution] | None = None


_FAMILIES: dict[type, _Family] = {
    dist.Bernoulli: _Family(("probs",)),
    dist.Categorical: _Family(("probs",)),
    dist.OrderedLogistic: _Family(("probs",), build=dist.Categorical),
    dist.OneHotCategorical: _Family(("probs",)),
    dist.OneHotCategoricalStraightThrough: _Family(("probs",)),
    dist.Binomial: _Family(("probs",), ("total_count",)),
    dist.ExtendedBinomial: _Family(("probs",), ("total_count",)),
    dist.BetaBinomial: _Family(("concentration1", "concentration0"), ("total_count",)),
    dist.ExtendedBetaBinomial: _Family(
        ("concentration1", "concentration0"), ("total_count",)
    ),
    dist.OneOneMatching: _Family(("logits",)),
    dist.OneTwoMatching: _Family(("logits",), ("bp_iters",)),
    dist.SpanningTree: _Family(("edge_logits",), ("sampler_options",)),
}


def _unwrap(fn: Any) -> Any:
    """Strip the wrappers that do not change the support (mask, expand, and
    Independent of no dims)."""
    while True:
        if isinstance(fn, (dist.MaskedDistribution, dist.ExpandedDistribution)):
            fn = fn.base_dist
        elif isinstance(fn, dist.Independent) and fn.reinterpreted_batch_ndims == 0:
            fn = fn.base_dist
        else:
            return fn


def _not_enumerable(site: SiteFacts, why: str) -> NotImplementedError:
    known = ", ".join(sorted(t.__name__ for t in _FAMILIES))
    return NotImplementedError(
        f"AutoDiscreteParallel cannot guide site {site.name!r}: {why}. It learns "
        f"discrete sites whose support Pyro can enumerate ({known}); give "
        f"{site.name!r} another guide in an AutoGuideList and build this one on "
        f"poutine.block(model, hide=[{site.name!r}])"
    )


def _kept_value(site: SiteFacts, fn: Any, name: str) -> Any:
    value = getattr(fn, name)
    if name != "total_count":
        return value
    total = torch.as_tensor(value)
    if total.numel() and bool((total != total.reshape(-1)[0]).any()):
        raise _not_enumerable(
            site,
            "its total_count differs between elements, so it has no "
            "enumerable support; use one total_count for the whole site",
        )
    return int(total.reshape(-1)[0]) if total.numel() else 0


@attrs.frozen
class _Learned:
    """One discrete site: its facts, its family and the prior's kept arguments."""

    site: SiteFacts
    family: _Family
    build: Callable[..., dist.Distribution]
    kept: dict[str, Any]
    event_dims: dict[str, int]


def _learned_site(site: SiteFacts) -> tuple[_Learned, dict[str, PyroParam]]:
    fn = site.fn
    enumerate_as = site.infer.get("enumerate", "parallel")
    if not getattr(fn, "has_enumerate_support", False):
        if not site.is_discrete:
            why = f"it is continuous ({type(fn).__name__} prior)"
        else:
            why = f"its {type(fn).__name__} prior has no finite support to enumerate"
        raise _not_enumerable(site, why)
    if enumerate_as != "parallel":
        raise _not_enumerable(
            site,
            f"it is configured with infer={{'enumerate': {enumerate_as!r}}}; "
            "remove that setting so it can be enumerated in parallel",
        )
    base = _unwrap(fn)
    family = _FAMILIES.get(type(base))
    if family is None:
        raise _not_enumerable(site, f"its {type(base).__name__} prior is not supported")
    batch_shape = fn.batch_shape
    params, event_dims = {}, {}
    for name in family.learned:
        init = getattr(base, name).detach()
        event_shape = init.shape[len(base.batch_shape) :]
        init = init.expand(batch_shape + event_shape).clone()
        event_dim = len(event_shape)
        init = site.full_size(init, event_dim)
        constraint = (family.build or type(base)).arg_constraints[name]
        params[name] = PyroParam(init, constraint, event_dim)
        event_dims[name] = event_dim
    kept = {name: _kept_value(site, base, name) for name in family.kept}
    build = family.build or type(base)
    return _Learned(site, family, build, kept, event_dims), params


class AutoDiscreteParallel(AutoGuide):
    """A mean-field discrete guide, enumerated in parallel by ``TraceEnum_ELBO``.

    Every latent site of the model must be discrete with an enumerable support
    (build the guide on ``poutine.block(model, expose=[...])`` and guide the
    continuous sites with another guide in an :class:`~guide_core.AutoGuideList`).
    Each site gets a distribution of its prior's family whose parameters are
    learned, initialised at the prior's: ``AutoDiscreteParallel.<site>_probs``
    for Bernoulli, Categorical (also for OrderedLogistic priors),
    OneHotCategorical and (Extended)Binomial, whose ``total_count`` is kept;
    ``<site>_concentration1`` and ``<site>_concentration0`` for
    (Extended)BetaBinomial; ``<site>_logits`` for One{One,Two}Matching and
    ``<site>_edge_logits`` for SpanningTree. Parameters cover the whole of a
    subsampled plate. Sites are sampled with ``infer={"enumerate": "parallel"}``.

    ``median`` returns each site's mode, ``quantiles`` the smallest support
    value whose cumulative probability reaches each level (support values in
    the order the distribution enumerates them).

    Parameters
    ----------
    model : callable
        A Pyro model whose latent sites are all discrete.
    create_plates : callable, optional
        Returns the plates to use for data subsampling; see :class:`AutoGuide`.
    """

    def __init__(self, model: Callable, *, create_plates: Callable | None = None):
        super().__init__(model, create_plates=create_plates)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        self._discrete_sites: list[_Learned] = []
        for name, site in self._prototype.sites.items():
            learned, params = _learned_site(site)
            self._discrete_sites.append(learned)
            for param_name, param in params.items():
                set_nested(self, f"{name}_{param_name}", param)

    def _distribution(self, learned: _Learned) -> dist.Distribution:
        name = learned.site.name
        params = {p: get_nested(self, f"{name}_{p}") for p in learned.family.learned}
        return learned.build(**params, **learned.kept)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Sample (or, under ``TraceEnum_ELBO``, enumerate) every discrete site."""
        self._ensure_setup(*args, **kwargs)
        self._create_plates(*args, **kwargs)
        result = {}
        for learned in self._discrete_sites:
            name = learned.site.name
            with self._site_plates(learned.site):
                fn = self._distribution(learned)  # params subsampled by the plates
                result[name] = pyro.sample(name, fn, infer={"enumerate": "parallel"})
        return result

    def _support(self, learned: _Learned) -> tuple[torch.Tensor, torch.Tensor, int]:
        fn = self._distribution(learned)
        support = fn.enumerate_support(expand=True)  # (K,) + batch + event
        log_prob = fn.log_prob(support)  # (K,) + batch
        return support, log_prob, len(fn.event_shape)

    @staticmethod
    def _take(
        support: torch.Tensor, index: torch.Tensor, event_dim: int
    ) -> torch.Tensor:
        """Pick ``support[index[l, b], b]`` for each row ``l`` of ``index``."""
        index = index.reshape(index.shape + (1,) * event_dim)
        index = index.expand(index.shape[:1] + support.shape[1:])
        return support.gather(0, index)

    def _median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        result = {}
        for learned in self._discrete_sites:
            support, log_prob, event_dim = self._support(learned)
            mode = log_prob.argmax(0).unsqueeze(0)
            result[learned.site.name] = self._take(support, mode, event_dim)[0]
        return result

    def _quantiles(
        self, q: torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        result = {}
        for learned in self._discrete_sites:
            support, log_prob, event_dim = self._support(learned)
            cdf = log_prob.exp().cumsum(0)  # (K,) + batch
            levels = q.to(cdf).reshape((-1, 1) + (1,) * (cdf.dim() - 1))
            index = (cdf.unsqueeze(0) < levels).sum(1).clamp(max=cdf.shape[0] - 1)
            result[learned.site.name] = self._take(support, index, event_dim)
        return result


@hookimpl
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register ``auto_discrete_parallel``."""
    register(
        GuideSpec(
            name="auto_discrete_parallel",
            factory=AutoDiscreteParallel,
            family="discrete",
            summary=(
                "Mean-field discrete distribution per site, enumerated in parallel "
                "by TraceEnum_ELBO."
            ),
            # its sites are independent, but TraceMeanField_ELBO needs
            # reparameterized guide sites, which discrete ones are not
            capabilities=Capabilities(continuous=False, discrete=True, subsample=True),
        )
    )
