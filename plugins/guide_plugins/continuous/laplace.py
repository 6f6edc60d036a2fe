""":class:`AutoLaplaceApproximation`: a MAP point, then a normal from the Hessian."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.ops.hessian import hessian
from torch import nn

from guide_core import init_to_median

from .base import AutoContinuous
from .normals import AutoMultivariateNormal

__all__ = ["AutoLaplaceApproximation", "LaplaceHessianError"]


class LaplaceHessianError(ValueError):
    """The Hessian at the guide's point is not positive definite (or not finite)."""


def _validate_jitter(jitter: Any) -> float:
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)):
        raise TypeError(f"'hessian_jitter' must be a float such as 1e-3: {jitter!r}")
    if not jitter >= 0:
        raise ValueError(f"'hessian_jitter' must be >= 0: {jitter!r}")
    return float(jitter)


class AutoLaplaceApproximation(AutoContinuous):
    """A MAP guide over the flat latent, turned into a normal by the Hessian.

    Train it like a MAP guide (its posterior is a point mass at the parameter
    ``AutoLaplaceApproximation.loc``), then call :meth:`laplace_approximation`
    for an :class:`AutoMultivariateNormal` centred there whose covariance is
    the inverse Hessian of the negative log joint density (in the
    unconstrained space). It can also be used directly: :meth:`median` is the
    point and :meth:`quantiles` are those of the Laplace approximation (pass
    the model's arguments, the Hessian needs them).

    A Hessian that is singular or not positive definite raises
    :class:`LaplaceHessianError` naming the sites involved; setting
    ``hessian_jitter`` adds ``hessian_jitter * I`` to it first.

    Parameters
    ----------
    model : callable
        A Pyro model.
    init_loc_fn : callable
        Per-site initialization strategy (an ``init_to_*``).
    hessian_jitter : float
        Added to the Hessian's diagonal before inverting it (default 0: none).
    """

    def __init__(
        self,
        model: Callable,
        init_loc_fn: Callable = init_to_median,
        *,
        hessian_jitter: float = 0.0,
    ):
        self.hessian_jitter = _validate_jitter(hessian_jitter)
        super().__init__(model, init_loc_fn=init_loc_fn)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        self.loc = nn.Parameter(self._init_loc())

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.TorchDistribution:
        """Return a point mass at ``loc`` over the flat latent (MAP inference)."""
        return dist.Delta(self.loc).to_event(1)

    # -- the Hessian -----------------------------------------------------------

    def _hessian(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Hessian of ``-log p(x, z)`` in the unconstrained space, at ``loc``."""
        with torch.enable_grad():
            guide_trace = poutine.trace(self).get_trace(*args, **kwargs)
            replayed = poutine.replay(self.model, trace=guide_trace)
            model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
            loss = guide_trace.log_prob_sum() - model_trace.log_prob_sum()
            return hessian(loss, self.loc).detach()

    def _hessian_error(self, H: torch.Tensor, why: str) -> LaplaceHessianError:
        names = self._layout.names
        if why == "not finite":
            bad = (~torch.isfinite(H)).any(-1).nonzero().reshape(-1).tolist()
            detail = "it has NaN or infinite entries"
        else:
            evals, evecs = torch.linalg.eigh((H + H.transpose(-1, -2)) / 2)
            small = evals.min()
            tol = evals.abs().max() * H.shape[-1] * torch.finfo(H.dtype).eps
            low = evals <= tol
            if not bool(low.any()):
                low = evals == small
            weight = evecs[:, low].pow(2).sum(-1)
            bad = (weight > 0.1 * weight.max()).nonzero().reshape(-1).tolist()
            kind = "singular" if float(small) >= -float(tol) else "indefinite"
            detail = f"it is {kind} (smallest eigenvalue {float(small):.3g})"
        sites = self._layout.sites_at(bad) or names
        return LaplaceHessianError(
            f"{type(self).__name__}: the Hessian of the negative log joint at the "
            f"current loc is not positive definite, so it has no Laplace "
            f"approximation: {detail}; the degenerate directions involve site(s) "
            f"{', '.join(repr(s) for s in sites)}. Train the guide until the loss "
            "stops decreasing (loc may not be a MAP point yet), give those sites "
            "proper priors, or regularise: set guide.hessian_jitter = 1e-3 (or pass "
            "hessian_jitter=1e-3 to AutoLaplaceApproximation) to add 1e-3 * I"
        )

    def _laplace(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        """Return ``(loc, scale, scale_tril)``: the marginal standard deviations
        and the Cholesky factor of the correlation matrix of the approximation."""
        self._ensure_setup(*args, **kwargs)
        H = self._hessian(*args, **kwargs)
        jitter = _validate_jitter(self.hessian_jitter)
        if jitter:
            H = H + jitter * torch.eye(H.shape[-1], dtype=H.dtype, device=H.device)
        if not bool(torch.isfinite(H).all()):
            raise self._hessian_error(H, "not finite")
        chol, info = torch.linalg.cholesky_ex(H)
        if int(info) != 0:
            raise self._hessian_error(H, "not positive definite")
        with torch.no_grad():
            # covariance = H^-1 from its Cholesky factor; then split it into the
            # marginal scales and the Cholesky factor of the correlation matrix
            covariance = torch.cholesky_inverse(chol)
            scale = covariance.diagonal().sqrt()
            correlation = covariance / torch.outer(scale, scale)
            corr_tril, info = torch.linalg.cholesky_ex(correlation)
        if int(info) != 0:
            raise self._hessian_error(H, "not positive definite")
        return self.loc.detach(), scale, corr_tril

    def laplace_approximation(
        self, *args: Any, **kwargs: Any
    ) -> AutoMultivariateNormal:
        """Return an :class:`AutoMultivariateNormal` with the Laplace approximation.

        Its ``loc``, ``scale`` and ``scale_tril`` are fixed buffers (not trained
        parameters): the current ``loc`` and the factors of the inverse Hessian.
        Takes the model's arguments.

        Raises
        ------
        LaplaceHessianError
            The Hessian is singular, indefinite or not finite (names the sites).
        """
        loc, scale, scale_tril = self._laplace(*args, **kwargs)
        guide = AutoMultivariateNormal(self.model)
        guide._setup_prototype(*args, **kwargs)
        for name, value in (("loc", loc), ("scale", scale), ("scale_tril", scale_tril)):
            delattr(guide, name)
            guide.register_buffer(name, value)
        return guide

    # -- summaries -------------------------------------------------------------

    def _median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        latent = self.loc.detach()
        return self._layout.constrain(self._layout.unpack_stacked(latent))

    def _latent_quantiles(
        self, q: torch.Tensor, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        loc, scale, _ = self._laplace(*args, **kwargs)
        q = q.to(dtype=loc.dtype, device=loc.device).unsqueeze(-1)
        return dist.Normal(loc, scale).icdf(q)
