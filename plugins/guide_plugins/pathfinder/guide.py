""":class:`AutoPathfinder`: Pathfinder variational inference as a guide.

Pathfinder (Zhang, Carpenter, Gelman & Vehtari, JMLR 2022) runs L-BFGS on the
log joint density in the unconstrained space, forms a Gaussian at each iterate
from L-BFGS's own inverse Hessian estimate, and keeps the iterate whose
Gaussian has the best ELBO estimate. With several paths from dispersed starts
their draws are combined by Pareto-smoothed importance resampling. It is
fitted by :meth:`AutoPathfinder.run` (``guide_core.fit`` calls it), not by SVI.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import pyro.distributions as dist
import torch
from pyro import poutine

from guide_core import init_to_uniform

from ..continuous.base import AutoContinuous
from .approximation import (
    gaussian_covariance,
    gaussian_log_prob,
    gaussian_sample,
    gaussians_along,
)
from .densities import DrawDensities
from .laplace import LaplaceMixin
from .lbfgs import lbfgs_path
from .mixture import PathfinderMixture
from .psis import psis_smooth

__all__ = ["AutoPathfinder", "PathfinderRun"]

# Rows of one vectorized run of the model (draws of the flat latent).
_CHUNK = 2000


@attrs.frozen
class PathfinderRun:
    """What :meth:`AutoPathfinder.run` did.

    Attributes
    ----------
    elbos : tuple of float
        Per path, the ELBO estimate of the Gaussian it kept (``-inf`` for a
        path that failed).
    iterations : tuple of int
        Per path, the L-BFGS iterations run.
    gradient_evaluations : int
        Log density gradients computed (L-BFGS and its line searches).
    density_evaluations : int
        Log densities computed without a gradient (ELBO and importance draws).
    pareto_k : float
        The k-hat of the importance weights of the paths' draws.
    weights : tuple of float
        The share of the resampled draws that came from each path.
    notes : tuple of str
        Per path, why its L-BFGS stopped (or why the path failed).
    """

    elbos: tuple[float, ...]
    iterations: tuple[int, ...]
    gradient_evaluations: int
    density_evaluations: int
    pareto_k: float
    weights: tuple[float, ...]
    notes: tuple[str, ...]


def _resolution(dtype: torch.dtype) -> float:
    """The relative change of the log density below which a model computed
    in ``dtype`` only shows round-off: L-BFGS stops there. None in float64,
    where a long ridge (kilpisjarvi) moves the density by less than 1e-12 a
    step; ten float32 eps in float32, which round-off otherwise keeps
    "improving" for the whole ``max_iters``, 40 line-search trials a step."""
    return 0.0 if dtype == torch.float64 else 10 * torch.finfo(dtype).eps


def _positive_int(name: str, value: Any, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"'{name}' must be an int such as {example}: {value!r}")
    if value < 1:
        raise ValueError(f"'{name}' must be >= 1 such as {example}: {value!r}")
    return value


class AutoPathfinder(LaplaceMixin, DrawDensities, AutoContinuous):
    """Pathfinder: the best Gaussian along an L-BFGS path, over one or more paths.

    The guide's posterior over the flat unconstrained latent is a mixture of
    the Gaussians the paths kept, each weighted by its share of the
    importance-resampled draws (one Gaussian when ``num_paths=1``). Its
    parameters are buffers set by :meth:`run`; it is not trained by SVI.
    :attr:`draws` holds the importance-resampled draws themselves (flat,
    unconstrained), Pathfinder's own output.

    All latent sites must be continuous, and no plate may be subsampled: the
    L-BFGS objective must be deterministic.

    Parameters
    ----------
    model : callable
        A Pyro model.
    num_paths : int
        Independent L-BFGS paths from dispersed starts (``init_loc_fn`` is
        drawn again for each); 1 is single-path Pathfinder.
    history : int
        L-BFGS history size ``J``; the covariance has rank ``<= 2J`` beyond
        its diagonal.
    max_iters : int
        Most L-BFGS iterations per path.
    num_elbo_draws : int
        Draws per ELBO estimate along the path.
    num_draws : int
        Draws per path for the importance resampling, and resampled draws
        kept in :attr:`draws`.
    init_loc_fn : callable
        Where each path starts; the default draws uniformly from ``(-2, 2)``
        in the unconstrained space, as Stan does.
    """

    def __init__(
        self,
        model: Callable,
        *,
        num_paths: int = 4,
        history: int = 6,
        max_iters: int = 1000,
        num_elbo_draws: int = 25,
        num_draws: int = 1000,
        init_loc_fn: Callable = init_to_uniform,
    ):
        self.num_paths = _positive_int("num_paths", num_paths, "4")
        self.history = _positive_int("history", history, "6")
        self.max_iters = _positive_int("max_iters", max_iters, "1000")
        self.num_elbo_draws = _positive_int("num_elbo_draws", num_elbo_draws, "25")
        self.num_draws = _positive_int("num_draws", num_draws, "1000")
        self.last_run: PathfinderRun | None = None
        super().__init__(model, init_loc_fn=init_loc_fn)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        self._refuse_subsampling(self._prototype.plates.values())
        loc = self._init_loc().detach()
        dim, rank = loc.shape[-1], min(2 * self.history, loc.shape[-1])
        paths = self.num_paths
        self.register_buffer("loc", loc.expand(paths, dim).clone())
        self.register_buffer("sqrt_alpha", torch.ones_like(self.loc))
        q = torch.zeros(paths, dim, rank, dtype=loc.dtype, device=loc.device)
        q[:, :rank, :rank] = torch.eye(rank, dtype=loc.dtype)
        self.register_buffer("q_factor", q)
        eye = torch.eye(rank, dtype=loc.dtype, device=loc.device)
        self.register_buffer("l_factor", eye.expand(paths, rank, rank).clone())
        weights = torch.zeros(paths, dtype=loc.dtype, device=loc.device)
        weights[0] = 1.0
        self.register_buffer("weights", weights)
        self.register_buffer("draws", loc.expand(self.num_draws, dim).clone())
        self.register_buffer("fitted", torch.tensor(False, device=loc.device))

    def _refuse_subsampling(self, plates: Iterable[Any]) -> None:
        """Raise if one of ``plates`` (:class:`PlateFacts` or Pyro frames) is
        subsampled."""
        for plate in plates:
            full = getattr(plate, "full_size", None)
            if full is not None and plate.size != full:
                raise ValueError(
                    f"{type(self).__name__} needs a deterministic log density, "
                    f"but plate {plate.name!r} is subsampled ({plate.size} of "
                    f"{full}); run it on the whole data (no subsample_size) "
                    "or use an SVI guide such as AutoNormal"
                )

    # -- the posterior ---------------------------------------------------------

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.TorchDistribution:
        """The mixture of the paths' Gaussians (a point while :meth:`run`
        evaluates the log density)."""
        if self._point is not None:
            return dist.Delta(self._point, event_dim=1)
        return PathfinderMixture(
            self.loc, self.sqrt_alpha, self.q_factor, self.l_factor, self.weights
        )

    def _components(self) -> tuple[torch.Tensor, ...]:
        return self.loc, self.sqrt_alpha, self.q_factor, self.l_factor

    def _single(self) -> int | None:
        active = (self.weights > 0).nonzero().reshape(-1)
        return int(active[0]) if active.numel() == 1 else None

    def _latent_quantiles(
        self, q: torch.Tensor, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        k = self._single()
        if k is None:
            return super()._latent_quantiles(q, *args, **kwargs)
        loc = self.loc[k]
        sd = gaussian_covariance(tuple(p[k] for p in self._components()))
        sd = sd.diagonal().sqrt()
        q = q.to(dtype=loc.dtype, device=loc.device).unsqueeze(-1)
        return dist.Normal(loc, sd).icdf(q)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and covariance of the fitted posterior over the flat
        unconstrained latent: the Gaussian's own for one path, else those of
        the importance-resampled draws."""
        k = self._single()
        if k is not None:
            part = tuple(p[k] for p in self._components())
            return self.loc[k].clone(), gaussian_covariance(part)
        draws = self.draws
        return draws.mean(0), torch.cov(draws.T).reshape(draws.shape[1], -1)

    # -- fitting -----------------------------------------------------------------

    def _start(self, path: int, args: tuple, kwargs: dict) -> torch.Tensor:
        if path == 0:
            return self._init_loc().detach()
        trace = poutine.trace(self.model).get_trace(*args, **kwargs)
        values = {
            s.name: s.site.require_transform().inv(trace.nodes[s.name]["value"])
            for s in self._layout
        }
        return self._layout.pack(values).detach()

    def run(self, *args: Any, **kwargs: Any) -> PathfinderRun:
        """Run Pathfinder on the model with these arguments; set the guide.

        Raises
        ------
        ValueError
            If every path fails: the log density (or its gradient) is not
            finite at every start, or no path found positive curvature.
        """
        self._ensure_setup(*args, **kwargs)
        with torch.no_grad():  # observed sites can sit in subsampled plates too
            model_trace, _ = self._traces(self._init_loc(), args, kwargs)
        nodes = model_trace.nodes.values()
        self._refuse_subsampling(
            frame for node in nodes for frame in node.get("cond_indep_stack", ())
        )
        dtype = self.loc.dtype
        counts = {"grad": 0, "density": 0}

        def value_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
            counts["grad"] += 1
            z = x.to(dtype).detach().requires_grad_(True)
            with torch.enable_grad():
                value = self._log_density_or_reject(z, args, kwargs)
                if not bool(torch.isfinite(value)):
                    return float(value.detach()), torch.full_like(x, math.nan)
                (grad,) = torch.autograd.grad(value, z)
            return float(value.detach()), grad.double()

        def densities(zs: torch.Tensor) -> torch.Tensor:
            counts["density"] += zs.shape[0]
            with torch.no_grad():
                out = self._log_densities(zs.to(dtype), args, kwargs).double()
            return torch.nan_to_num(out, nan=-math.inf)

        kept, elbos, iterations, notes = [], [], [], []
        for p in range(self.num_paths):
            start = self._start(p, args, kwargs).double()
            self.last_rejection = None
            try:
                path = lbfgs_path(
                    value_and_grad,
                    start,
                    history=self.history,
                    max_iters=self.max_iters,
                    tol_rel_obj=_resolution(dtype),
                )
            except ValueError as exc:
                kept.append(None)
                elbos.append(-math.inf)
                iterations.append(0)
                raised = self.last_rejection
                notes.append(
                    f"{exc} (the model raised {raised})" if raised else str(exc)
                )
                continue
            best, best_elbo = self._best_along(path, densities)
            kept.append(best)
            elbos.append(best_elbo if best is not None else -math.inf)
            iterations.append(path.xs.shape[0] - 1)
            notes.append(
                path.reason if best is not None else "no positive curvature found"
            )
        if all(g is None for g in kept):
            sites = ", ".join(repr(n) for n in self._layout.names)
            raise ValueError(
                f"{type(self).__name__}: every path failed ({'; '.join(notes)}). The "
                f"log density of the model is not finite at any start; check the "
                f"priors and supports of the sites {sites}, or pass an init_loc_fn "
                "that starts inside the support (init_loc_fn=init_to_median)"
            )
        self._store(kept, densities)
        run = PathfinderRun(
            elbos=tuple(elbos),
            iterations=tuple(iterations),
            gradient_evaluations=counts["grad"],
            density_evaluations=counts["density"],
            pareto_k=self._pareto_k,
            weights=tuple(float(w) for w in self.weights),
            notes=tuple(notes),
        )
        self.last_run = run
        return run

    def _best_along(self, path: Any, densities: Callable) -> tuple[Any, float]:
        """The Gaussian of best ELBO along ``path``, all ELBO draws evaluated
        in one batch (one model run per chunk instead of one per iterate)."""
        gaussians = [g for _, g in gaussians_along(path, self.history) if g is not None]
        if not gaussians:
            return None, -math.inf
        k, dim = self.num_elbo_draws, path.xs.shape[-1]
        draws, log_q = [], []
        for gaussian in gaussians:
            noise = torch.randn(k, dim, dtype=torch.float64)
            x = gaussian_sample(gaussian, noise)
            draws.append(x)
            log_q.append(gaussian_log_prob(gaussian, x))
        log_p = torch.cat(
            [densities(chunk) for chunk in torch.cat(draws).split(_CHUNK)]
        )
        elbos = (log_p - torch.cat(log_q)).reshape(len(gaussians), k).mean(-1)
        elbos = torch.nan_to_num(elbos, nan=-math.inf)
        best = int(elbos.argmax())
        return gaussians[best], float(elbos[best])

    @torch.no_grad()
    def _store(self, kept: list, densities: Callable) -> None:
        dim = self.loc.shape[-1]
        all_draws, all_lw, owner = [], [], []
        for p, gaussian in enumerate(kept):
            if gaussian is None:
                continue
            draws = gaussian_sample(
                gaussian, torch.randn(self.num_draws, dim, dtype=torch.float64)
            )
            all_draws.append(draws)
            log_p = torch.cat([densities(c) for c in draws.split(_CHUNK)])
            all_lw.append(log_p - gaussian_log_prob(gaussian, draws))
            owner.append(torch.full((self.num_draws,), p))
            rank = gaussian[2].shape[-1]
            target_rank = self.q_factor.shape[-1]
            loc, sqrt_alpha, q, tril = (t.to(self.loc) for t in gaussian)
            if rank < target_rank:  # pad: zero columns of q, identity in tril
                q = torch.cat([q, q.new_zeros(dim, target_rank - rank)], -1)
                tril = torch.block_diag(tril, torch.eye(target_rank - rank).to(tril))
            self.loc[p], self.sqrt_alpha[p], self.q_factor[p], self.l_factor[p] = (
                loc,
                sqrt_alpha,
                q,
                tril,
            )
        draws, lw, owner = torch.cat(all_draws), torch.cat(all_lw), torch.cat(owner)
        smoothed, k = psis_smooth(lw)
        self._pareto_k = k
        if len(all_draws) == 1 and self.num_paths == 1:
            picked = torch.arange(self.num_draws)
        else:
            probs = (smoothed - smoothed.max()).exp()
            picked = torch.multinomial(probs, self.num_draws, replacement=True)
        share = torch.bincount(owner[picked], minlength=self.num_paths).double()
        self.weights.copy_(share / share.sum())
        self.draws.copy_(draws[picked].to(self.draws))
        self.fitted.fill_(True)
