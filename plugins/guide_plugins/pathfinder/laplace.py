"""The Laplace approximation: Newton's method to the mode, the exact Hessian.

Pathfinder's Gaussians come from L-BFGS's inverse Hessian estimate, which is
only as good as its short history: on a posterior with correlations of
0.9999 (posteriordb's diamonds) L-BFGS runs out of iterations well away from
the mode and its covariance is off by 4x. Where the dimension allows an exact
Hessian, a few Newton steps from Pathfinder's answer reach the mode to
machine precision, and ``-H^{-1}`` there is the local covariance. Both are
candidates for a guide's warm start; :func:`gaussian_elbos` scores them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import attrs
import torch

__all__ = ["BestGaussian", "Laplace", "LaplaceMixin", "gaussian_elbos", "newton_mode"]

#: Largest flat dimension for which the exact Hessian is computed.
MAX_DIM = 200
#: Draws per ELBO estimate when choosing among Gaussians.
CHOICE_DRAWS = 256


@attrs.frozen(eq=False)
class Laplace:
    """The mode and the inverse negative Hessian there, or why there are none.

    Attributes
    ----------
    loc : torch.Tensor or None
        ``(D,)`` the mode (None when Newton's method failed).
    covariance : torch.Tensor or None
        ``(D, D)`` ``-H^{-1}`` at the mode.
    gradient_evaluations : int
        Gradients and Hessian-vector products computed (``D + 1`` per step).
    reason : str
        How it ended.
    """

    loc: torch.Tensor | None
    covariance: torch.Tensor | None
    gradient_evaluations: int
    reason: str


def _hessian(log_density: Callable, x: torch.Tensor) -> torch.Tensor:
    try:
        return torch.autograd.functional.hessian(log_density, x, vectorize=True)
    except Exception:  # noqa: BLE001 - an op without a batching rule: row by row
        return torch.autograd.functional.hessian(log_density, x)


def _value_and_grad(log_density: Callable, x: torch.Tensor) -> tuple:
    z = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = log_density(z)
        (grad,) = torch.autograd.grad(value, z)
    return float(value.detach()), grad.detach()


def newton_mode(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    max_iters: int = 20,
    tol: float = 1e-10,
) -> Laplace:
    """Newton's method with a backtracking line search, from ``start``.

    Each step solves ``-H d = g`` by Cholesky, so it stops (without an
    answer) where ``-H`` is not positive definite: a funnel's neck, a saddle.
    It has converged when the Newton decrement ``g' (-H)^{-1} g`` is below
    ``tol``.

    Parameters
    ----------
    log_density : callable
        ``(D,)`` tensor to a differentiable scalar log density.
    start : torch.Tensor
        ``(D,)`` where to start, e.g. Pathfinder's mean.
    """
    dim = start.shape[-1]
    if dim > MAX_DIM:
        return Laplace(None, None, 0, f"no exact Hessian above {MAX_DIM} dimensions")
    x, evaluations = start.detach().clone(), 0
    for _ in range(max_iters):
        value, grad = _value_and_grad(log_density, x)
        evaluations += 1
        if not math.isfinite(value):
            return Laplace(None, None, evaluations, "the log density is not finite")
        hessian = _hessian(log_density, x).detach()
        evaluations += dim
        if not bool(torch.isfinite(hessian).all()):
            return Laplace(None, None, evaluations, "the log density is not finite")
        factor, info = torch.linalg.cholesky_ex(-hessian)
        if int(info) != 0:
            reason = "the Hessian is not negative definite on the way to the mode"
            return Laplace(None, None, evaluations, reason)
        step = torch.cholesky_solve(grad[:, None], factor)[:, 0]
        decrement = float(grad @ step)
        if decrement < tol:
            covariance = torch.cholesky_inverse(factor)
            return Laplace(x, covariance, evaluations, "Newton's method converged")
        size = 1.0
        with torch.no_grad():
            while size > 1e-6 and not float(log_density(x + size * step)) > value:
                size /= 2
        if size <= 1e-6:
            break
        x = x + size * step
    return Laplace(None, None, evaluations, "Newton's method did not converge")


def gaussian_elbos(
    densities: Callable[[torch.Tensor], torch.Tensor],
    gaussians: Sequence[tuple[torch.Tensor, torch.Tensor]],
    num_draws: int,
) -> torch.Tensor:
    """ELBO estimates of full-covariance Gaussians, with common random numbers
    (the same standard normal draws for each), so their differences are sharp.

    Parameters
    ----------
    densities : callable
        ``(n, D)`` points to ``(n,)`` log densities (``-inf`` where undefined).
    gaussians : sequence of (loc, covariance)
        ``(D,)`` and ``(D, D)`` each.
    num_draws : int
        Draws per estimate.

    Returns
    -------
    torch.Tensor
        ``(len(gaussians),)``; ``-inf`` for a covariance that is not positive
        definite.
    """
    loc0 = gaussians[0][0]
    noise = torch.randn(num_draws, loc0.shape[-1], dtype=loc0.dtype)
    out = []
    for loc, covariance in gaussians:
        factor, info = torch.linalg.cholesky_ex(covariance)
        if int(info) != 0:
            out.append(-math.inf)
            continue
        q = torch.distributions.MultivariateNormal(loc, scale_tril=factor)
        x = loc + noise @ factor.T
        elbo = (densities(x) - q.log_prob(x)).mean()
        out.append(float(torch.nan_to_num(elbo, nan=-math.inf)))
    return torch.tensor(out, dtype=torch.float64)


@attrs.frozen(eq=False)
class BestGaussian:
    """The Gaussian of best ELBO among Pathfinder's and Laplace's.

    Attributes
    ----------
    loc, covariance : torch.Tensor
        ``(D,)`` and ``(D, D)``.
    source : str
        Which candidate won, e.g. ``"Laplace mode and covariance"``.
    gradient_evaluations : int
        Those of Newton's method (Pathfinder's own are in its run).
    """

    loc: torch.Tensor
    covariance: torch.Tensor
    source: str
    gradient_evaluations: int


class LaplaceMixin:
    """The Laplace approximation of a fitted :class:`AutoPathfinder`, and the
    choice between it and Pathfinder's Gaussian (for warm starts)."""

    def laplace(self, *args, **kwargs) -> Laplace:
        """Newton's method from the mean of the fitted draws, on the model's
        log density over the flat unconstrained latent; see
        :func:`newton_mode`."""
        start = self.moments()[0].detach()

        def log_density(z: torch.Tensor) -> torch.Tensor:
            return self._log_density_or_reject(z.to(start.dtype), args, kwargs)

        return newton_mode(log_density, start)

    @torch.no_grad()
    def best_gaussian(self, *args, **kwargs) -> BestGaussian:
        """Of Pathfinder's mean and covariance, the Laplace mode and
        covariance, and the two crossings of them, the Gaussian with the best
        ELBO estimate: the start closest, in the objective an SVI guide
        minimizes, to where its fit ends."""
        loc, covariance = (t.detach() for t in self.moments())
        candidates = {"Pathfinder mean and covariance": (loc, covariance)}
        laplace = self.laplace(*args, **kwargs)
        if laplace.loc is not None:
            candidates["Laplace mode and covariance"] = (
                laplace.loc,
                laplace.covariance,
            )
            candidates["Pathfinder mean, Laplace covariance"] = (
                loc,
                laplace.covariance,
            )
            candidates["Laplace mode, Pathfinder covariance"] = (
                laplace.loc,
                covariance,
            )

        def densities(zs: torch.Tensor) -> torch.Tensor:
            out = self._log_densities(zs.to(loc.dtype), args, kwargs)
            return torch.nan_to_num(out, nan=-math.inf)

        elbos = gaussian_elbos(densities, list(candidates.values()), CHOICE_DRAWS)
        best = int(elbos.argmax())
        name = list(candidates)[best]
        loc, covariance = candidates[name]
        if laplace.loc is None:
            name += f" ({laplace.reason})"
        return BestGaussian(loc, covariance, name, laplace.gradient_evaluations)
