"""The ``batched`` family: one joint Gaussian per element of the leading plates.

For a model whose local latents are independent across a plate but
correlated within each of its elements, a Gaussian over the whole flat latent
(:class:`~guide_plugins.continuous.AutoMultivariateNormal`) costs ``O(D^2)``
parameters and ``O(D^3)`` time for ``D = N * d`` coordinates. The guides here
give each element of the leading ``batch_ndim`` plate dims its own Gaussian
over its ``d`` coordinates instead: ``N`` Gaussians of dimension ``d``, so
memory and time grow linearly in the plate size ``N``.

Every latent site must sit in the same leading ``batch_ndim`` plates (its
leftmost batch dims, of one common ``batch_shape``). Element ``b`` of the
batch owns the coordinates ``value[b]`` of every site, unconstrained and
flattened in model order; :class:`BatchedLayout` does that bookkeeping, and
the draws are handed to the model through the continuous family's flat
layout, so constraints, log-dets, plates and summaries work exactly as they
do there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pyro.distributions as dist
import torch

from guide_core import Capabilities, GuideSpec, hookimpl, init_to_median
from guide_core.plugin import LatentLayout
from guide_plugins.continuous import (
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
)

__all__ = [
    "AutoBatchedLowRankMultivariateNormal",
    "AutoBatchedMultivariateNormal",
    "BatchedLayout",
    "register_guides",
]


@attrs.frozen(eq=False)
class BatchedLayout:
    """Where each site's coordinates sit in the vector of one batch element.

    Attributes
    ----------
    layout : LatentLayout
        The flat layout of all sites (site-major, as in ``AutoContinuous``).
    batch_shape : torch.Size
        The common leading plate dims of every site.
    offsets : tuple of (int, int)
        Per site (in ``layout`` order), its slice of the element's vector.
    element_dim : int
        The length ``d`` of one batch element's vector.
    """

    layout: LatentLayout
    batch_shape: torch.Size
    offsets: tuple[tuple[int, int], ...]
    element_dim: int

    @classmethod
    def build(cls, layout: LatentLayout, batch_ndim: int, owner: str) -> BatchedLayout:
        """Check that every site shares the leading ``batch_ndim`` plates.

        Raises
        ------
        ValueError
            A site has fewer than ``batch_ndim`` plate dims on its left, or its
            leading plates or their sizes differ from the first site's.
        """
        expected, first, offsets, pos = None, None, [], 0
        for slot in layout:
            site = slot.site
            batch_rank = site.value.dim() - site.event_dim
            plates = {p.dim: p.name for p in site.plates}
            names = tuple(plates.get(i - batch_rank) for i in range(batch_ndim))
            shape = slot.shape[:batch_ndim]
            if batch_rank < batch_ndim or None in names:
                raise ValueError(
                    f"{owner}(batch_ndim={batch_ndim}) needs the leftmost "
                    f"{batch_ndim} dim(s) of every latent site to be plates, but site "
                    f"{site.name!r} has shape {tuple(site.shape)} with batch shape "
                    f"{tuple(site.shape[:batch_rank])} in plates "
                    f"{[p.name for p in site.plates]}; lower batch_ndim or make the "
                    "batch plate the outermost one of every site"
                )
            if expected is None:
                expected, first = (names, shape), site.name
            elif (names, shape) != expected:
                raise ValueError(
                    f"{owner}: site {site.name!r} has batch shape {tuple(shape)} in "
                    f"plates {list(names)}, but site {first!r} set the expected "
                    f"batch shape {tuple(expected[1])} in plates {list(expected[0])}; "
                    f"every latent site must share the leading {batch_ndim} plate "
                    "dim(s) (guide the other sites separately with AutoGuideList)"
                )
            size = (slot.stop - slot.start) // max(1, shape.numel())
            offsets.append((pos, pos + size))
            pos += size
        return cls(layout, torch.Size(expected[1]), tuple(offsets), pos)

    def _sample_shape(self, x: torch.Tensor, event_ndim: int) -> torch.Size:
        return x.shape[: x.dim() - event_ndim]

    def to_flat(self, latent: torch.Tensor) -> torch.Tensor:
        """``sample_shape + batch_shape + (d,)`` to ``sample_shape + (D,)``."""
        lead = self._sample_shape(latent, len(self.batch_shape) + 1)
        parts = [
            latent[..., start:stop].reshape(lead + (-1,))
            for start, stop in self.offsets
        ]
        return torch.cat(parts, dim=-1)

    def from_flat(self, flat: torch.Tensor) -> torch.Tensor:
        """``sample_shape + (D,)`` to ``sample_shape + batch_shape + (d,)``."""
        lead = self._sample_shape(flat, 1) + self.batch_shape
        parts = [
            flat[..., slot.start : slot.stop].reshape(lead + (stop - start,))
            for slot, (start, stop) in zip(self.layout, self.offsets)
        ]
        return torch.cat(parts, dim=-1)


def _validate_batch_ndim(batch_ndim: Any) -> int:
    if isinstance(batch_ndim, bool) or not isinstance(batch_ndim, int):
        raise TypeError(f"'batch_ndim' must be an int >= 1 such as 1: {batch_ndim!r}")
    if batch_ndim < 1:
        raise ValueError(
            f"'batch_ndim' must be >= 1 (the number of leading plate dims that get "
            f"one Gaussian per element): {batch_ndim!r}; for a single Gaussian over "
            "all sites use AutoMultivariateNormal"
        )
    return batch_ndim


class _Batched:
    """What a batched guide adds to a Gaussian of the continuous family.

    Placed before that Gaussian in the MRO: its parameters get the shape
    ``batch_shape + (d,)`` (``loc``) instead of ``(latent_dim,)``, its
    posterior gets the batch dims as event dims, and every flat-latent
    operation of :class:`~guide_plugins.continuous.AutoContinuous` (emitting
    the sites, medians, quantiles) gets the flat reordering of a draw.
    """

    batch_ndim: int
    _layout: LatentLayout
    _batching: BatchedLayout

    @property
    def batch_shape(self) -> torch.Size:
        """The common leading plate dims (set on the first call)."""
        return self._batching.batch_shape

    @property
    def element_dim(self) -> int:
        """The dimension of each batch element's Gaussian (set on the first call)."""
        return self._batching.element_dim

    def _init_loc(self) -> torch.Tensor:
        # Called by the Gaussian's _setup_prototype right after the flat layout
        # exists; the batch layout (and its checks) comes first.
        name = type(self).__name__
        self._batching = BatchedLayout.build(self._layout, self.batch_ndim, name)
        return self._batching.from_flat(self._layout.init_latent())

    def _flat_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return self._batching.to_flat(latent)

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.TorchDistribution:
        """Return the Gaussians of all batch elements as one distribution.

        Its event shape is ``batch_shape + (element_dim,)``; element ``b``'s
        vector holds the unconstrained coordinates ``[b]`` of every site.
        """
        return super().get_posterior(*args, **kwargs).to_event(self.batch_ndim)

    def get_base_dist(self) -> dist.TorchDistribution:
        """Not defined: the batched latent is not the flat vector that
        ``get_base_dist``/``get_transform`` users such as NeuTraReparam expect."""
        raise NotImplementedError(
            f"{type(self).__name__} has no get_base_dist()/get_transform(): its "
            "latent is batched, not the flat vector NeuTraReparam works on; use "
            "AutoMultivariateNormal or AutoLowRankMultivariateNormal for that"
        )

    def get_transform(self, *args: Any, **kwargs: Any) -> Any:
        """Not defined (see :meth:`get_base_dist`)."""
        return self.get_base_dist()

    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        loc, scale = super()._loc_scale(*args, **kwargs)
        return self._batching.to_flat(loc), self._batching.to_flat(scale)


class AutoBatchedMultivariateNormal(_Batched, AutoMultivariateNormal):
    """A full-covariance normal per element of the leading ``batch_ndim`` plates.

    Parameters ``AutoBatchedMultivariateNormal.loc`` (``batch_shape + (d,)``),
    ``.scale`` (the same shape, positive) and ``.scale_tril`` (``batch_shape +
    (d, d)``, unit lower triangular); element ``b``'s covariance has the
    Cholesky factor ``scale[b][:, None] * scale_tril[b]``. The draw is sampled
    at ``_AutoBatchedMultivariateNormal_latent``. Medians and quantiles are
    exact. All latent sites must share the leading ``batch_ndim`` plates
    (none of them subsampled).

    Parameters
    ----------
    model : callable
        A Pyro model.
    batch_ndim : int
        How many leading plate dims get one Gaussian per element (>= 1).
    init_loc_fn : callable
        Per-site initialization strategy (an ``init_to_*``).
    init_scale : float
        Initial standard deviation of every unconstrained coordinate (> 0).
    """

    def __init__(
        self,
        model: Callable,
        *,
        batch_ndim: int = 1,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
    ):
        self.batch_ndim = _validate_batch_ndim(batch_ndim)
        super().__init__(model, init_loc_fn=init_loc_fn, init_scale=init_scale)


class AutoBatchedLowRankMultivariateNormal(_Batched, AutoLowRankMultivariateNormal):
    """A low-rank-plus-diagonal normal per element of the leading plates.

    Parameters ``AutoBatchedLowRankMultivariateNormal.loc`` and ``.scale``
    (``batch_shape + (d,)``) and ``.cov_factor`` (``batch_shape + (d,
    rank)``); element ``b``'s covariance is ``diag(scale[b]) (I + F F^T)
    diag(scale[b])`` with ``F = cov_factor[b]``. The draw is sampled at
    ``_AutoBatchedLowRankMultivariateNormal_latent``. Medians and quantiles
    are exact. All latent sites must share the leading ``batch_ndim`` plates.

    Parameters
    ----------
    model : callable
        A Pyro model.
    batch_ndim : int
        How many leading plate dims get one Gaussian per element (>= 1).
    init_loc_fn : callable
        Per-site initialization strategy (an ``init_to_*``).
    init_scale : float
        Approximate initial standard deviation of each coordinate (> 0).
    rank : int, optional
        Rank of each element's low-rank part; ``None`` means
        ``round(sqrt(d))``.
    """

    def __init__(
        self,
        model: Callable,
        *,
        batch_ndim: int = 1,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
        rank: int | None = None,
    ):
        self.batch_ndim = _validate_batch_ndim(batch_ndim)
        super().__init__(
            model, init_loc_fn=init_loc_fn, init_scale=init_scale, rank=rank
        )


_GUIDES = {
    "auto_batched_multivariate_normal": (
        AutoBatchedMultivariateNormal,
        "One full-covariance normal per element of the leading plate dims.",
    ),
    "auto_batched_low_rank_multivariate_normal": (
        AutoBatchedLowRankMultivariateNormal,
        "One low-rank-plus-diagonal normal per element of the leading plate dims.",
    ),
}


@hookimpl
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register ``auto_batched_multivariate_normal`` and its low-rank sibling."""
    for name, (cls, summary) in _GUIDES.items():
        register(
            GuideSpec(
                name=name,
                factory=cls,
                family="batched",
                summary=summary,
                capabilities=Capabilities(jit=True),
            )
        )
