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

import pyro.distributions as dist
import torch
from torch.distributions.multivariate_normal import _batch_mv
from torch.distributions.utils import _standard_normal

__all__ = ["OwnDrawMultivariateNormal"]

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
        tril = self._unbroadcasted_scale_tril
        half_log_det = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        mahalanobis = eps.pow(2).sum(-1)
        return -0.5 * (self._event_shape[0] * math.log(2 * math.pi) + mahalanobis) - (
            half_log_det
        )
