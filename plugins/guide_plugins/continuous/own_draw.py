"""A ``MultivariateNormal`` that knows the noise of its own draws.

An ELBO asks a guide for ``log q(z)`` at the ``z = loc + L eps`` the guide
just drew. The textbook route solves ``L u = z - loc`` for ``u`` (a
triangular solve, and in the backward pass a second solve and a masked
outer product, all of size ``D x D``), only to get back ``u = eps``. This
distribution keeps ``eps`` with the draw it made and, asked for the density
of that very tensor, uses it: the same value up to rounding, and the same
gradient (``|L^-1 (z - loc)|^2`` does not depend on the parameters when
``z`` is the reparameterized draw, so only ``log det L`` contributes, in
both routes). Any other value goes the textbook way.
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import torch
from torch.distributions import Distribution
from torch.distributions.multivariate_normal import _batch_mv
from torch.distributions.utils import _standard_normal, lazy_property

__all__ = ["FactoredMultivariateNormal", "OwnDrawMultivariateNormal"]

_NO_SHAPE = torch.Size()


class OwnDrawMultivariateNormal(dist.MultivariateNormal):
    """``MultivariateNormal`` whose density at its own last draw skips the solve."""

    _last: tuple[torch.Tensor, torch.Tensor] | None = None

    def rsample(self, sample_shape: torch.Size = _NO_SHAPE) -> torch.Tensor:
        """Draw as ``MultivariateNormal.rsample`` does, keeping the noise."""
        shape = self._extended_shape(sample_shape)
        eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        value = self.loc + _batch_mv(self._unbroadcasted_scale_tril, eps)
        self._last = (value, eps)
        return value

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The density; from the kept noise when ``value`` is the last draw."""
        last = self._last
        if last is None or value is not last[0]:
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        eps = last[1]
        half_log_det = self._half_log_det()
        mahalanobis = eps.pow(2).sum(-1)
        return -0.5 * (self._event_shape[0] * math.log(2 * math.pi) + mahalanobis) - (
            half_log_det
        )

    def _half_log_det(self) -> torch.Tensor:
        tril = self._unbroadcasted_scale_tril
        return tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)


class FactoredMultivariateNormal(OwnDrawMultivariateNormal):
    """``MultivariateNormal`` with Cholesky factor ``scale[..., None] * unit_tril``.

    :class:`~.normals.AutoMultivariateNormal`'s factor is a positive vector
    times a unit lower triangular matrix. Kept as the two factors, a draw is
    ``loc + scale * (unit_tril @ eps)`` and ``log det`` is
    ``sum(log scale)`` (``unit_tril`` must have a unit diagonal): the ``D x D`` product
    ``scale[..., None] * unit_tril`` (and, in the backward pass, its
    gradient) is never formed on the ELBO's path, which is a third of the
    ``D x D`` memory traffic of a step. The product is built only when asked
    for (``scale_tril``, ``covariance_matrix``, the density of another value).
    The values are those of ``MultivariateNormal(loc, scale_tril=...)`` up to
    rounding, its draws from the same noise.
    """

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor,
        unit_tril: torch.Tensor,
        validate_args: bool | None = None,
    ):
        dim = loc.shape[-1:] * 2 if loc.dim() else None
        if (
            dim is None
            or scale.shape[-1:] != loc.shape[-1:]
            or unit_tril.shape[-2:] != dim
        ):
            raise ValueError(
                "FactoredMultivariateNormal needs loc (..., D), scale (..., D) and "
                f"unit_tril (..., D, D); got {tuple(loc.shape)}, "
                f"{tuple(scale.shape)} and {tuple(unit_tril.shape)}"
            )
        batch_shape = torch.broadcast_shapes(
            loc.shape[:-1], scale.shape[:-1], unit_tril.shape[:-2]
        )
        event_shape = loc.shape[-1:]
        self.loc = loc.expand(batch_shape + event_shape)
        self._scale, self._unit_tril = scale, unit_tril
        Distribution.__init__(self, batch_shape, event_shape, validate_args)

    @lazy_property
    def _unbroadcasted_scale_tril(self) -> torch.Tensor:  # type: ignore[override]
        return self._scale.unsqueeze(-1) * self._unit_tril

    def expand(
        self, batch_shape: torch.Size, _instance: Any = None
    ) -> FactoredMultivariateNormal:
        """Expand the batch shape, keeping the two factors unbroadcast."""
        new = self._get_checked_instance(FactoredMultivariateNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new._scale, new._unit_tril = self._scale, self._unit_tril
        for name in ("_unbroadcasted_scale_tril", "scale_tril", "covariance_matrix"):
            if name in self.__dict__:  # already built: share, broadcast
                value = self.__dict__[name]
                if name != "_unbroadcasted_scale_tril":
                    value = value.expand(batch_shape + self.event_shape * 2)
                new.__dict__[name] = value
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: torch.Size = _NO_SHAPE) -> torch.Tensor:
        """Draw ``loc + scale * (unit_tril @ eps)``, keeping the noise."""
        shape = self._extended_shape(sample_shape)
        eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        value = self.loc + self._scale * _batch_mv(self._unit_tril, eps)
        self._last = (value, eps)
        return value

    def _half_log_det(self) -> torch.Tensor:
        # diag(unit_tril) is one by construction (``unit_lower_cholesky``), so
        # it adds log 1 = 0 and no gradient to a free parameter; reading it
        # would put a D x D diagonal into the backward pass for nothing
        return self._scale.log().sum(-1)
