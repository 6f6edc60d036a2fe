"""The Gaussian at each iterate of an L-BFGS path, and its ELBO.

At iterate ``l`` the history of the last ``J`` accepted pairs
``s = x_l - x_{l-1}``, ``y = g_{l-1} - g_l`` gives the L-BFGS inverse Hessian
in its compact form, ``H = diag(alpha) + B G B^T`` (Byrd, Nocedal & Schnabel
1994), whose diagonal ``alpha`` is itself updated pair by pair as the
diagonal of a BFGS update (Gilbert & Lemarechal 1989), as Pathfinder does.
The Gaussian is ``N(x_l + H g_l, H)``: one quasi-Newton step from the iterate,
with the local curvature as covariance.

Each Gaussian is stored as ``loc``, ``sqrt_alpha`` (``D``), ``q`` (``D x r``,
orthonormal columns) and ``tril`` (``r x r``, lower triangular) with covariance
``diag(sqrt_alpha) (I + q (tril tril^T - I) q^T) diag(sqrt_alpha)``, so draws and
densities cost ``O(D r)``, ``r = min(2J, D)``. Leading dims of these tensors
index components (paths).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from .lbfgs import LBFGSPath

__all__ = [
    "PathGaussian",
    "gaussians_along",
    "gaussian_log_prob",
    "gaussian_sample",
    "update_diagonal",
]

_EPS = torch.finfo(torch.float64).eps

PathGaussian = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def update_diagonal(
    alpha: torch.Tensor, s: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """The diagonal of the BFGS update of the scaled diagonal Hessian
    ``(y' A y / y' s) diag(1 / alpha)`` by the pair ``(s, y)``, inverted."""
    a = float(y @ (alpha * y))
    b = float(y @ s)
    c = float(s @ (s / alpha))
    hess = (a / b) / alpha + y * y / b - (a / b) * (s / alpha) ** 2 / c
    return 1.0 / hess


def _inverse_hessian_factors(
    alpha: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, G)`` with ``H = diag(alpha) + B G B^T`` after the BFGS updates
    of ``diag(alpha)`` by ``pairs`` (oldest first)."""
    S = torch.stack([s for s, _ in pairs], -1)
    Y = torch.stack([y for _, y in pairs], -1)
    SY = S.T @ Y
    R = torch.triu(SY)
    E = torch.diag(SY.diagonal())
    eye = torch.eye(len(pairs), dtype=S.dtype)
    R_inv = torch.linalg.solve_triangular(R, eye, upper=True)
    AY = alpha[:, None] * Y
    top_left = R_inv.T @ (E + Y.T @ AY) @ R_inv
    G = torch.cat(
        [
            torch.cat([top_left, -R_inv.T], 1),
            torch.cat([-R_inv, torch.zeros_like(R_inv)], 1),
        ]
    )
    return torch.cat([S, AY], 1), G


def _gaussian(
    x: torch.Tensor,
    grad: torch.Tensor,
    alpha: torch.Tensor,
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
) -> PathGaussian | None:
    B, G = _inverse_hessian_factors(alpha, pairs)
    loc = x + alpha * grad + B @ (G @ (B.T @ grad))
    sqrt_alpha = alpha.sqrt()
    dim, rank = x.shape[0], B.shape[1]
    if rank < dim:
        q, r = torch.linalg.qr(B / sqrt_alpha[:, None])
        inner = torch.eye(rank, dtype=x.dtype) + r @ G @ r.T
    else:  # the history spans the space: the dense covariance, scaled
        q = torch.eye(dim, dtype=x.dtype)
        inner = torch.eye(dim, dtype=x.dtype) + (B @ G @ B.T) / torch.outer(
            sqrt_alpha, sqrt_alpha
        )
    tril, info = torch.linalg.cholesky_ex((inner + inner.T) / 2)
    if int(info) != 0 or not bool(torch.isfinite(loc).all()):
        return None
    return loc, sqrt_alpha, q, tril


def gaussians_along(
    path: LBFGSPath, history: int
) -> Iterator[tuple[int, PathGaussian | None]]:
    """Yield ``(tril, gaussian)`` for each iterate ``tril >= 1`` of ``path``;
    ``gaussian`` is None where no curvature pair is known yet or the
    factorisation failed."""
    alpha = torch.ones_like(path.xs[0])
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i in range(1, path.xs.shape[0]):
        s = path.xs[i] - path.xs[i - 1]
        y = path.grads[i - 1] - path.grads[i]
        if float(y @ s) > _EPS * float(y @ y):
            updated = update_diagonal(alpha, s, y)
            if bool(torch.isfinite(updated).all()) and bool((updated > 0).all()):
                alpha = updated
            pairs.append((s, y))
            del pairs[:-history]
        if not pairs:
            yield i, None
            continue
        yield i, _gaussian(path.xs[i], path.grads[i], alpha, pairs)


def gaussian_sample(gaussian: PathGaussian, noise: torch.Tensor) -> torch.Tensor:
    """Map standard normal ``noise`` (``..., D``) to draws of the Gaussian(s)
    (component dims of the Gaussian broadcast against ``noise``'s)."""
    loc, sqrt_alpha, q, tril = gaussian
    eye = torch.eye(tril.shape[-1], dtype=tril.dtype, device=tril.device)
    w = (noise.unsqueeze(-2) @ q).squeeze(-2)  # (..., r)
    w = (w.unsqueeze(-2) @ (tril - eye).mT).squeeze(-2)
    return loc + sqrt_alpha * (noise + (w.unsqueeze(-2) @ q.mT).squeeze(-2))


def gaussian_log_prob(gaussian: PathGaussian, value: torch.Tensor) -> torch.Tensor:
    """The log density of the Gaussian(s) at ``value`` (``..., D``)."""
    loc, sqrt_alpha, q, tril = gaussian
    z = (value - loc) / sqrt_alpha
    w = (z.unsqueeze(-2) @ q).squeeze(-2)
    white = torch.linalg.solve_triangular(tril, w.unsqueeze(-1), upper=False)
    quad = z.pow(2).sum(-1) - w.pow(2).sum(-1) + white.squeeze(-1).pow(2).sum(-1)
    diag = tril.diagonal(dim1=-2, dim2=-1)
    log_det = 2 * sqrt_alpha.log().sum(-1) + 2 * diag.log().sum(-1)
    return -0.5 * (value.shape[-1] * math.log(2 * math.pi) + log_det + quad)


def gaussian_covariance(gaussian: PathGaussian) -> torch.Tensor:
    """The dense covariance (``D x D``), for summaries and warm starts."""
    _, sqrt_alpha, q, tril = gaussian
    eye_r = torch.eye(tril.shape[-1], dtype=tril.dtype, device=tril.device)
    inner = q @ (tril @ tril.mT - eye_r) @ q.mT
    inner = inner + torch.eye(q.shape[-2], dtype=q.dtype, device=q.device)
    return sqrt_alpha.unsqueeze(-1) * inner * sqrt_alpha.unsqueeze(-2)
