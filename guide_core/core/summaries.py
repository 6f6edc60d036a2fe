"""Medians and quantiles of distributions, shared by every guide family.

Guides summarise their posterior by pushing quantiles of a simple base
distribution through the site's bijection (as ``pyro.infer.autoguide`` does),
so one set of rules serves the mean-field, messenger and composite guides.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch.distributions import Distribution

__all__ = [
    "as_quantiles",
    "distribution_median",
    "distribution_quantiles",
    "point_quantiles",
]


def as_quantiles(
    quantiles: Sequence[float] | torch.Tensor, like: torch.Tensor | None = None
) -> torch.Tensor:
    """Validate requested quantile levels and return them as a 1-D tensor.

    Raises
    ------
    ValueError
        If ``quantiles`` is empty, not 1-D, or has a level outside ``[0, 1]``.
    """
    kwargs = {} if like is None else {"dtype": like.dtype, "device": like.device}
    q = torch.as_tensor(quantiles, **kwargs)
    if like is None and not q.is_floating_point():
        q = q.to(torch.get_default_dtype())
    if q.dim() == 0:
        q = q.reshape(1)
    if q.dim() != 1 or q.numel() == 0:
        raise ValueError(
            f"quantiles must be a non-empty list of levels such as [0.05, 0.5, 0.95], "
            f"got {quantiles!r}"
        )
    if bool(((q < 0) | (q > 1)).any()):
        raise ValueError(f"quantile levels must lie in [0, 1], got {q.tolist()}")
    return q


def _unwrap(d: Distribution) -> Distribution:
    while isinstance(d, (dist.Independent, torch.distributions.Independent)):
        d = d.base_dist
    return d


def _a_parameter(d: Distribution) -> torch.Tensor | None:
    """A tensor of ``d``'s dtype and device (its mean, or its base's)."""
    try:
        return d.mean
    except (NotImplementedError, AttributeError):
        pass
    base = getattr(d, "base_dist", None)
    return None if base is None else _a_parameter(base)


def distribution_quantiles(d: Distribution, q: torch.Tensor) -> torch.Tensor:
    """Return the elementwise quantiles of ``d`` at levels ``q``, stacked on dim 0.

    Delta distributions give their point at every level; transformed
    distributions give the transform of their base quantiles (exact for the
    monotone elementwise bijections of constrained supports).

    Raises
    ------
    NotImplementedError
        If ``d`` has neither an inverse CDF nor a known reduction to one.
    """
    d = _unwrap(d)
    if isinstance(d, dist.Delta):
        return d.v.expand((q.numel(),) + d.v.shape)
    if isinstance(d, dist.MaskedDistribution):
        return distribution_quantiles(d.base_dist, q)
    shape = (-1,) + (1,) * len(d.batch_shape + d.event_shape)
    # the levels in the distribution's dtype: a float32 level would win over a
    # 0-dim float64 parameter in torch's type promotion
    like = _a_parameter(d)
    levels = q.reshape(shape) if like is None else q.to(like).reshape(shape)
    try:  # a distribution's own inverse CDF first (HalfCauchy is |Cauchy|, but
        # its quantiles are not |Cauchy quantiles|)
        return d.icdf(levels)
    except NotImplementedError:
        pass
    if isinstance(d, torch.distributions.TransformedDistribution):
        x = distribution_quantiles(d.base_dist, q)
        for t in d.transforms:
            x = t(x)
        return x
    raise NotImplementedError(
        f"cannot compute quantiles of {type(d).__name__}: it has no icdf; "
        "override the guide's quantiles() for this site"
    )


def distribution_median(d: Distribution) -> torch.Tensor:
    """Return the elementwise median of ``d`` (its mean if it has no icdf)."""
    q = torch.tensor([0.5])
    try:
        return distribution_quantiles(d, q)[0]
    except NotImplementedError:
        return d.mean


def point_quantiles(
    values: dict[str, torch.Tensor], q: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Quantiles of point masses: each value repeated at every level (dim 0)."""
    return {n: v.expand((q.numel(),) + v.shape) for n, v in values.items()}
