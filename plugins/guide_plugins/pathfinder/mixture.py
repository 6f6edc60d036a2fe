"""The distribution of a fitted Pathfinder guide: a weighted mixture of the
paths' Gaussians over the flat unconstrained latent."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from .approximation import gaussian_log_prob, gaussian_sample

__all__ = ["PathfinderMixture"]


class PathfinderMixture(TorchDistribution):
    """A mixture of the Gaussians of Pathfinder paths (event shape ``(D,)``).

    Parameters
    ----------
    loc, sqrt_alpha : torch.Tensor
        ``(K, D)``: each component's mean and the square roots of its
        diagonal factor.
    q_factor : torch.Tensor
        ``(K, D, r)`` with orthonormal columns.
    l_factor : torch.Tensor
        ``(K, r, r)`` lower triangular; component ``k``'s covariance is
        ``diag(a) (I + q (l l^T - I) q^T) diag(a)`` with ``a = sqrt_alpha[k]``.
    weights : torch.Tensor
        ``(K,)`` non-negative mixture weights (normalised here); a component
        of weight zero is never drawn.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        loc: torch.Tensor,
        sqrt_alpha: torch.Tensor,
        q_factor: torch.Tensor,
        l_factor: torch.Tensor,
        weights: torch.Tensor,
        validate_args: bool | None = None,
    ):
        self.components = (loc, sqrt_alpha, q_factor, l_factor)
        self.weights = weights / weights.sum()
        super().__init__(torch.Size(), loc.shape[-1:], validate_args=validate_args)

    def sample(self, sample_shape: tuple = ()) -> torch.Tensor:
        """Draw a component by weight, then a draw of that Gaussian."""
        loc = self.components[0]
        shape = torch.Size(sample_shape) + self.batch_shape
        n = shape.numel()
        which = torch.multinomial(self.weights, n, replacement=True)
        noise = torch.randn(n, loc.shape[-1], dtype=loc.dtype, device=loc.device)
        picked = tuple(part[which] for part in self.components)
        with torch.no_grad():
            return gaussian_sample(picked, noise).reshape(shape + self.event_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log sum_k w_k N_k(value)``."""
        per_component = gaussian_log_prob(self.components, value.unsqueeze(-2))
        return torch.logsumexp(per_component + self.weights.log(), -1)

    @property
    def mean(self) -> torch.Tensor:
        return (self.weights.unsqueeze(-1) * self.components[0]).sum(-2)
