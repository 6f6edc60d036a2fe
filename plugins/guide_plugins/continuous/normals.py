"""Normal posteriors over the flat latent: diagonal, full and low-rank covariance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.util import eye_like
from pyro.nn.module import PyroParam
from torch import nn

from guide_core import init_to_median
from guide_core.plugin import (
    GaussianStart,
    assign_param,
    location_steps,
    mean_field_scale,
    row_step_bounds,
    scale_steps,
    validate_init_scale,
)

from .base import AutoContinuous
from .lowrank import LowRankAffine
from .lowrank_normal import FunctionalLowRankMultivariateNormal
from .own_draw import FactoredMultivariateNormal

__all__ = [
    "AutoDiagonalNormal",
    "AutoLowRankMultivariateNormal",
    "AutoMultivariateNormal",
]


class _StandardNormalBase:
    """``get_base_dist``: a standard normal over the flat latent."""

    loc: torch.Tensor

    def get_base_dist(self) -> dist.TorchDistribution:
        """Return ``Normal(0, 1)`` over the flat latent (event shape ``(D,)``)."""
        zero = torch.zeros_like(self.loc)
        return dist.Normal(zero, torch.ones_like(self.loc)).to_event(1)


class AutoDiagonalNormal(_StandardNormalBase, AutoContinuous):
    """A normal with diagonal covariance over the flat unconstrained latent.

    Parameters ``AutoDiagonalNormal.loc`` (initialized by ``init_loc_fn``) and
    ``AutoDiagonalNormal.scale`` (all ``init_scale``). The same distribution as
    :class:`~guide_core.AutoNormal`, held as two vectors instead of per site.
    The guide does not depend on the model's arguments.

    Parameters
    ----------
    model : callable
        A Pyro model.
    init_loc_fn : callable
        Per-site initialization strategy (an ``init_to_*``).
    init_scale : float
        Initial standard deviation of every unconstrained coordinate (> 0).
    """

    scale_constraint = constraints.softplus_positive

    def __init__(
        self,
        model: Callable,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
    ):
        self._init_scale = validate_init_scale(init_scale)
        super().__init__(model, init_loc_fn=init_loc_fn)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        self.loc = nn.Parameter(self._init_loc())
        scale = self.loc.new_full((self.latent_dim,), self._init_scale)
        self.scale = PyroParam(scale, self.scale_constraint)

    def get_transform(self, *args: Any, **kwargs: Any) -> dist.transforms.Transform:
        """Return the affine map ``z -> loc + scale * z`` on the flat latent.

        The map is elementwise, but it is declared on vectors (``event_dim=1``),
        like the transforms of the other guides, so its log-det is one number
        per draw (``sum(log(scale))``) rather than a vector of ``D``. Pyro's
        elementwise version (``event_dim=0``) makes Pyro's ``NeuTraReparam``
        count the first site's log-prob ``D`` times when that site is not
        batched like the latent; this project's
        :class:`~guide_plugins.neutra.NeuTraReparam` gives the same, correct
        target for either (see the migration guide).
        """
        return dist.transforms.AffineTransform(self.loc, self.scale, event_dim=1)

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.TorchDistribution:
        """Return ``Normal(loc, scale)`` over the flat latent."""
        return dist.Normal(self.loc, self.scale).to_event(1)

    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        return self.loc, self.scale

    def _warm_start(self, start: GaussianStart) -> dict[str, torch.Tensor]:
        loc, cov = self._start_in_layout(start)
        reordered = GaussianStart({"": (0, loc.shape[0], loc.shape)}, loc, cov)
        scale = mean_field_scale(reordered)
        assign_param(self, "loc", loc)
        assign_param(self, "scale", scale)
        return {"loc": location_steps(cov), "scale": scale_steps(scale)}


class AutoMultivariateNormal(_StandardNormalBase, AutoContinuous):
    """A normal with full covariance over the flat unconstrained latent.

    The covariance's Cholesky factor is ``scale[:, None] * scale_tril`` with
    ``scale`` positive (``scale_constraint``) and ``scale_tril`` unit lower
    triangular (``scale_tril_constraint``); parameters
    ``AutoMultivariateNormal.loc``, ``.scale`` and ``.scale_tril``. It starts
    at ``init_loc_fn``'s point with covariance ``init_scale**2 * I``. The guide
    does not depend on the model's arguments.

    Parameters
    ----------
    model : callable
        A Pyro model.
    init_loc_fn : callable
        Per-site initialization strategy (an ``init_to_*``).
    init_scale : float
        Initial standard deviation of every unconstrained coordinate (> 0).
    """

    scale_constraint = constraints.softplus_positive
    scale_tril_constraint = constraints.unit_lower_cholesky

    def __init__(
        self,
        model: Callable,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
    ):
        self._init_scale = validate_init_scale(init_scale)
        super().__init__(model, init_loc_fn=init_loc_fn)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        self.loc = nn.Parameter(self._init_loc())
        scale = torch.full_like(self.loc, self._init_scale)
        self.scale = PyroParam(scale, self.scale_constraint)
        # one identity per leading batch dim of loc (none here; see batched guides)
        dim = self.loc.shape[-1]
        tril = eye_like(self.loc, dim).expand(self.loc.shape + (dim,)).clone()
        self.scale_tril = PyroParam(tril, self.scale_tril_constraint)

    def _cholesky(self) -> torch.Tensor:
        return self.scale[..., None] * self.scale_tril

    def get_transform(self, *args: Any, **kwargs: Any) -> dist.transforms.Transform:
        """Return ``z -> loc + L z`` with ``L`` the covariance's Cholesky factor."""
        return dist.transforms.LowerCholeskyAffine(
            self.loc, scale_tril=self._cholesky()
        )

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.TorchDistribution:
        """Return the ``MultivariateNormal`` over the flat latent."""
        return FactoredMultivariateNormal(self.loc, self.scale, self.scale_tril)

    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        return self.loc, self._cholesky().pow(2).sum(-1).sqrt()

    def _warm_start(self, start: GaussianStart) -> dict[str, torch.Tensor]:
        loc, cov = self._start_in_layout(start)
        chol = torch.linalg.cholesky(cov)
        scale = chol.diagonal()
        unit = chol / scale.unsqueeze(-1)
        assign_param(self, "loc", loc)
        assign_param(self, "scale", scale)
        assign_param(self, "scale_tril", unit)
        narrow, row = row_step_bounds(cov, scale)
        return {
            "loc": location_steps(cov),
            "scale": scale_steps(scale) * narrow,
            "scale_tril": row.unsqueeze(-1).expand_as(unit).clone(),
        }


def _validate_rank(rank: Any) -> int | None:
    if rank is None:
        return None
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ValueError(
            f"'rank' must be a positive int such as 2, or None for about "
            f"sqrt(latent dim): {rank!r}"
        )
    return rank


class AutoLowRankMultivariateNormal(_StandardNormalBase, AutoContinuous):
    """A normal with low-rank-plus-diagonal covariance over the flat latent.

    The covariance is ``diag(scale) (I + cov_factor cov_factor^T) diag(scale)``
    with parameters ``AutoLowRankMultivariateNormal.loc``, ``.scale`` (positive,
    ``scale_constraint``) and ``.cov_factor`` (``D x rank``, drawn at random so
    that ``cov_factor cov_factor^T`` is on average the identity; ``scale``
    starts at ``init_scale / sqrt(2)``). Sampling, densities, medians,
    quantiles and :meth:`get_transform` all avoid any dense ``D x D`` matrix.
    The guide does not depend on the model's arguments.

    Parameters
    ----------
    model : callable
        A Pyro model.
    init_loc_fn : callable
        Per-site initialization strategy (an ``init_to_*``).
    init_scale : float
        Approximate initial standard deviation of each coordinate (> 0).
    rank : int, optional
        Rank of the low-rank part; ``None`` means ``round(sqrt(latent_dim))``.
    """

    scale_constraint = constraints.softplus_positive

    def __init__(
        self,
        model: Callable,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
        rank: int | None = None,
    ):
        self._init_scale = validate_init_scale(init_scale)
        self.rank = _validate_rank(rank)
        super().__init__(model, init_loc_fn=init_loc_fn)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        self.loc = nn.Parameter(self._init_loc())
        dim = self.loc.shape[-1]  # latent_dim (per batch element if batched)
        if self.rank is None:
            self.rank = int(round(dim**0.5))
        scale = torch.full_like(self.loc, 0.5**0.5 * self._init_scale)
        self.scale = PyroParam(scale, self.scale_constraint)
        factor = self.loc.new_empty(self.loc.shape + (self.rank,))
        self.cov_factor = nn.Parameter(factor.normal_(0, 1 / self.rank**0.5))

    def get_transform(self, *args: Any, **kwargs: Any) -> LowRankAffine:
        """Return the low-rank affine map taking white noise to the posterior."""
        return LowRankAffine(self.loc, self.scale, self.cov_factor)

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.TorchDistribution:
        """Return the ``LowRankMultivariateNormal`` over the flat latent."""
        scale = self.scale
        factor = self.cov_factor * scale.unsqueeze(-1)
        return FunctionalLowRankMultivariateNormal(self.loc, factor, scale * scale)

    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        return self.loc, self.scale * (self.cov_factor.pow(2).sum(-1) + 1).sqrt()

    def _warm_start(self, start: GaussianStart) -> dict[str, torch.Tensor]:
        # diag(s) (I + F F^T) diag(s) ~ cov: s the conditional sds (so q is
        # nowhere wider than the posterior across a ridge), then F from the
        # leading eigenpairs of cov / (s s^T) - I
        loc, cov = self._start_in_layout(start)
        reordered = GaussianStart({"": (0, loc.shape[0], loc.shape)}, loc, cov)
        scale = mean_field_scale(reordered)
        evals, evecs = torch.linalg.eigh(cov / torch.outer(scale, scale))
        top = evals.flip(-1)[: self.rank].sub(1).clamp_min(0)
        factor = evecs.flip(-1)[:, : self.rank] * top.sqrt()
        assign_param(self, "loc", loc)
        assign_param(self, "scale", scale)
        assign_param(self, "cov_factor", factor)
        narrow, row = row_step_bounds(cov, scale)
        return {
            "loc": location_steps(cov),
            "scale": scale_steps(scale) * narrow,
            "cov_factor": factor.abs().clamp_min(1.0) * row.unsqueeze(-1),
        }
