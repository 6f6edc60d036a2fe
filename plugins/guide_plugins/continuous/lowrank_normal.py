"""A ``LowRankMultivariateNormal`` whose set-up writes no tensor in place.

torch's ``LowRankMultivariateNormal`` builds its capacitance matrix
``I + W^T D^-1 W`` by adding one to a strided view of ``W^T D^-1 W`` in
place. Eagerly that is fine, but a recorded step then holds an in-place
write through an ``as_strided`` view, which ``torch.compile`` (inductor)
refuses, so :class:`AutoLowRankMultivariateNormal` could only be recorded,
never compiled. This subclass adds the identity out of place: the same
values bit for bit (adding ``0.0`` off the diagonal changes nothing but the
sign of a zero, which the Cholesky factor does not see), the same
gradients, the same draws, and every other method is torch's.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions import Distribution

__all__ = ["FunctionalLowRankMultivariateNormal", "capacitance_tril"]


def capacitance_tril(cov_factor: torch.Tensor, cov_diag: torch.Tensor) -> torch.Tensor:
    """The Cholesky factor of ``I + W^T diag(D)^-1 W``, computed out of place.

    Parameters
    ----------
    cov_factor : torch.Tensor
        ``W``, of shape ``(..., dim, rank)``.
    cov_diag : torch.Tensor
        ``D``, of shape ``(..., dim)``.
    """
    rank = cov_factor.shape[-1]
    scaled = cov_factor.mT / cov_diag.unsqueeze(-2)
    eye = torch.eye(rank, dtype=cov_factor.dtype, device=cov_factor.device)
    return torch.linalg.cholesky(torch.matmul(scaled, cov_factor) + eye)


class FunctionalLowRankMultivariateNormal(dist.LowRankMultivariateNormal):
    """``LowRankMultivariateNormal`` with its capacitance factor built out of place.

    It is a ``pyro.distributions.LowRankMultivariateNormal`` (``isinstance``
    holds), with the same attributes; arguments the parent would reject go
    to the parent, so its errors are the errors.
    """

    def __init__(
        self,
        loc: torch.Tensor,
        cov_factor: torch.Tensor,
        cov_diag: torch.Tensor,
        validate_args: bool | None = None,
    ):
        well_formed = (
            loc.dim() >= 1
            and cov_factor.dim() >= 2
            and cov_factor.shape[-2:-1] == loc.shape[-1:]
            and cov_diag.shape[-1:] == loc.shape[-1:]
        )
        try:
            parts = torch.broadcast_tensors(
                loc.unsqueeze(-1), cov_factor, cov_diag.unsqueeze(-1)
            )
        except RuntimeError:
            well_formed = False
        if not well_formed:
            super().__init__(loc, cov_factor, cov_diag, validate_args=validate_args)
            return
        self.loc, self.cov_factor, self.cov_diag = (
            parts[0][..., 0],
            parts[1],
            parts[2][..., 0],
        )
        self._unbroadcasted_cov_factor = cov_factor
        self._unbroadcasted_cov_diag = cov_diag
        self._capacitance_tril = capacitance_tril(cov_factor, cov_diag)
        Distribution.__init__(
            self, self.loc.shape[:-1], loc.shape[-1:], validate_args=validate_args
        )

    def expand(
        self, batch_shape: torch.Size, _instance: dist.TorchDistribution | None = None
    ) -> FunctionalLowRankMultivariateNormal:
        """Expand as the parent does, into an instance of this class."""
        new = _instance if _instance is not None else type(self).__new__(type(self))
        return super().expand(batch_shape, _instance=new)
