"""A bijection that turns white noise into a low-rank-plus-diagonal normal.

:class:`LowRankAffine` is what lets :class:`AutoLowRankMultivariateNormal`
expose ``get_base_dist``/``get_transform`` (for HMC preconditioning such as
NeuTra) without ever forming a dense ``D x D`` matrix.
"""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from torch.distributions import Transform

__all__ = ["LowRankAffine"]


class LowRankAffine(Transform):
    """``x = loc + scale * (z + Q diag(c) Q^T z)``: a symmetric low-rank square root.

    With ``cov_factor = Q diag(s) V^T`` (thin SVD, ``Q`` of shape ``(D, r)``)
    and ``c = sqrt(1 + s^2) - 1``, the matrix ``A = I + Q diag(c) Q^T`` is the
    symmetric square root of ``I + cov_factor cov_factor^T``. Pushing a
    standard normal through this map therefore gives the normal with mean
    ``loc`` and covariance ``diag(scale) (I + cov_factor cov_factor^T)
    diag(scale)`` -- the posterior of the low-rank guide. Forward, inverse and
    log-det all cost ``O(D r)`` per point after an ``O(D r^2)`` SVD.

    Parameters
    ----------
    loc : Tensor
        Shape ``(D,)``.
    scale : Tensor
        Positive, shape ``(D,)``.
    cov_factor : Tensor
        Shape ``(D, r)``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor,
        cov_factor: torch.Tensor,
        cache_size: int = 0,
    ):
        super().__init__(cache_size=cache_size)
        self.loc, self.scale = loc, scale
        q, s, _ = torch.linalg.svd(cov_factor, full_matrices=False)
        self._q = q
        root = (1 + s * s).sqrt()
        self._c = root - 1  # forward eigen-shift of A
        self._c_inv = root.reciprocal() - 1  # that of A^{-1}
        self._half_log_det = root.log().sum()

    def _apply(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return z + ((z @ self._q) * c) @ self._q.transpose(-1, -2)

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        return self.loc + self.scale * self._apply(z, self._c)

    def _inverse(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply((x - self.loc) / self.scale, self._c_inv)

    def log_abs_det_jacobian(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        value = self.scale.log().sum() + self._half_log_det
        return value.expand(z.shape[:-1])

    def with_cache(self, cache_size: int = 1) -> LowRankAffine:
        if self._cache_size == cache_size:
            return self
        new = LowRankAffine.__new__(LowRankAffine)
        Transform.__init__(new, cache_size=cache_size)
        for name in ("loc", "scale", "_q", "_c", "_c_inv", "_half_log_det"):
            setattr(new, name, getattr(self, name))
        return new
