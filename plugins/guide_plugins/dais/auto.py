""":class:`AutoDAIS`: differentiable annealed importance sampling over the flat latent.

:class:`AutoDAIS` refines a Gaussian over the flat unconstrained latent of
:class:`~guide_plugins.continuous.AutoContinuous` with ``K`` steps of
uncorrected underdamped Langevin (Hamiltonian) dynamics that anneal from the
Gaussian to the model's posterior (Geffner & Domke 2021, "MCMC variational
inference via uncorrected Hamiltonian annealing"; Zhang et al. 2021,
"Differentiable annealed importance sampling and the perils of gradient
noise"). Every step is differentiable, so the step size, the damping, the
mass matrix, the annealing schedule and the Gaussian are all trained by
maximizing the resulting bound on the log evidence with any ``Trace_ELBO``.

The weight of one trajectory
----------------------------
Write ``p(z)`` for the model's joint density in the unconstrained space (the
log-det of every site's bijection included), ``q0`` for the Gaussian and
``N`` for the momentum density ``Normal(0, M)``. A trajectory draws
``z_0 ~ q0`` and ``v_0 ~ N``; step ``k`` (``1..K``) first refreshes the
momentum, ``v'_k = gamma v_{k-1} + sqrt(1 - gamma^2) eps`` with
``eps ~ N`` (skipped at ``k = 1``, where ``v_0`` is already fresh), then
makes one leapfrog step of size ``eta`` on the potential
``-log pi_k = -(1 - beta_k) log q0 - beta_k log p``, giving ``(z_k, v_k)``.
The leapfrog map is volume-preserving and the refresh is reversible with
respect to ``N``, so with the reversed moves as the backward kernels the
log-weight is::

    log w = log p(z_K) - log q0(z_0) + sum_k [log N(v_k) - log N(v'_k)]

and ``E[log w] <= log p(x)``, the DAIS bound (with ``E[w] = p(x)``). The
guide samples the auxiliary site ``_AutoDAIS_latent`` as a point mass at
``z_K`` whose log density is ``log p(z_K) - log w``, the trajectory's own
terms, and every model site as a point mass at its slice of ``z_K``; a
``Trace_ELBO`` of the model and this guide is then ``log w``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.util import eye_like
from pyro.nn.module import PyroParam
from pyro.poutine.runtime import get_plates
from torch import nn

from guide_core import init_to_uniform
from guide_core.plugin import validate_init_scale
from guide_plugins.continuous import AutoContinuous

from .langevin import anneal, check_dynamics, logit_step, schedule, step_size

__all__ = ["AutoDAIS"]

BASE_DISTS = ("diagonal", "cholesky")


def _check_base_dist(base_dist: Any) -> str:
    if base_dist not in BASE_DISTS:
        raise ValueError(
            f"'base_dist' must be one of {', '.join(map(repr, BASE_DISTS))}: "
            f"{base_dist!r}"
        )
    return base_dist


class AutoDAIS(AutoContinuous):
    """Differentiable annealed importance sampling over the flat latent.

    A Gaussian ``q0`` over the flat unconstrained latent is followed by ``K``
    uncorrected underdamped Langevin steps that anneal from ``q0`` to the
    posterior through ``pi_k ∝ q0^(1 - beta_k) p(x, z)^beta_k``; the guide's
    density, as an ELBO sees it, is the trajectory's, so ``Trace_ELBO`` gives
    the DAIS bound (see the module docstring for the weight).

    Parameters in the param store: ``AutoDAIS.z_0_loc`` and
    ``AutoDAIS.z_0_scale`` (positive; plus ``AutoDAIS.z_0_scale_tril``, unit
    lower triangular, for ``base_dist="cholesky"``), ``AutoDAIS.eta_coeff``
    (the step size is ``eta_max * sigmoid(eta_coeff)``), ``AutoDAIS.gamma``
    (the momentum damping, in (0, 1)), ``AutoDAIS.mass_matrix`` (the positive
    diagonal of the momentum's covariance ``M``) and
    ``AutoDAIS.beta_increments`` (a simplex of ``K`` increments whose
    cumulative sums are the schedule ``0 < beta_1 < ... < beta_K = 1``).

    Each call evaluates the gradient of the model's log density ``K + 1``
    times, running the model under ``poutine.condition`` inside
    ``poutine.block`` (nothing reaches the outer trace); the model must
    therefore be differentiable in its latent values. As a part of an
    :class:`~guide_core.AutoGuideList` (built on ``poutine.block(model,
    expose=[...])``) it runs after the other parts and targets the list's
    model conditioned on their values, so the bound stays a bound of the whole
    model; one such part per list. Particles must not be vectorized
    (``vectorize_particles=True`` would give one trajectory to all
    particles); use ``Trace_ELBO(num_particles=n)``. Not JIT-compatible.

    :meth:`get_posterior` has no closed form and raises; :meth:`median` and
    :meth:`quantiles` are estimated from :attr:`num_summary_samples`
    trajectories drawn from a fork of the random state seeded with
    :attr:`summary_seed`, so they depend on the parameters alone.

    Parameters
    ----------
    model : callable
        A Pyro model.
    K : int
        Number of annealing (Langevin) steps, >= 1.
    base_dist : {"diagonal", "cholesky"}
        The covariance of the Gaussian ``q0``: diagonal or full (Cholesky).
    eta_init : float
        Initial step size, in ``(0, eta_max)``.
    eta_max : float
        Largest step size (> 0).
    gamma_init : float
        Initial momentum damping, in ``(0, 1)``; the refresh keeps ``gamma``
        of the old momentum.
    init_loc_fn : callable
        Per-site initialization strategy of ``q0``'s mean (an ``init_to_*``).
    init_scale : float
        Initial standard deviation of ``q0`` in every coordinate (> 0).
    """

    num_summary_samples: int = 250
    conditions_on_other_parts = True  # in an AutoGuideList, run after the rest

    def __init__(
        self,
        model: Callable,
        *,
        K: int = 4,
        base_dist: str = "diagonal",
        eta_init: float = 0.01,
        eta_max: float = 0.1,
        gamma_init: float = 0.9,
        init_loc_fn: Callable = init_to_uniform,
        init_scale: float = 0.1,
    ):
        checked = check_dynamics(K, eta_init, eta_max, gamma_init)
        self.K, self.eta_init, self.eta_max, self.gamma_init = checked
        self.base_dist = _check_base_dist(base_dist)
        self._init_scale = validate_init_scale(init_scale)
        super().__init__(model, init_loc_fn=init_loc_fn)
        # the model without init_loc_fn: conditioned runs must not draw inits
        self._target = (model,)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_target"] = None  # as the base drops the model
        return state

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        loc = self._init_loc()
        self.z_0_loc = nn.Parameter(loc)
        scale = torch.full_like(loc, self._init_scale)
        self.z_0_scale = PyroParam(scale, constraints.softplus_positive)
        if self.base_dist == "cholesky":
            tril = eye_like(loc, self.latent_dim)
            self.z_0_scale_tril = PyroParam(tril, constraints.unit_lower_cholesky)
        self.eta_coeff = nn.Parameter(
            loc.new_tensor(logit_step(self.eta_init, self.eta_max))
        )
        gamma = loc.new_tensor(self.gamma_init)
        self.gamma = PyroParam(gamma, constraints.interval(0.0, 1.0))
        self.mass_matrix = PyroParam(
            torch.ones_like(loc), constraints.softplus_positive
        )
        increments = loc.new_full((self.K,), 1.0 / self.K)
        self.beta_increments = PyroParam(increments, constraints.simplex)

    # -- the pieces of a trajectory ------------------------------------------------

    def get_base_dist(self) -> dist.TorchDistribution:
        """Return the Gaussian ``q0`` that starts every trajectory (event ``(D,)``)."""
        if self.base_dist == "cholesky":
            tril = self.z_0_scale[..., None] * self.z_0_scale_tril
            return dist.MultivariateNormal(self.z_0_loc, scale_tril=tril)
        return dist.Normal(self.z_0_loc, self.z_0_scale).to_event(1)

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.TorchDistribution:
        """Not available: the DAIS posterior has no closed-form density.

        Raises
        ------
        NotImplementedError
            Always; draw from the posterior by calling the guide, or use
            :meth:`median` and :meth:`quantiles`.
        """
        raise NotImplementedError(
            "AutoDAIS's posterior (a Gaussian moved by K Langevin steps) has no "
            "closed-form density; draw from it by calling the guide, use "
            "median()/quantiles(), or get_base_dist() for the starting Gaussian q0"
        )

    @property
    def step_size(self) -> torch.Tensor:
        """The leapfrog step size ``eta = eta_max * sigmoid(eta_coeff)``."""
        return step_size(self.eta_coeff, self.eta_max)

    @property
    def betas(self) -> torch.Tensor:
        """The annealing schedule ``beta_1 < ... < beta_K = 1`` (shape ``(K,)``)."""
        return schedule(self.beta_increments)

    def _log_joint(self, z: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        """``log p(x, z)`` in the unconstrained space, for one flat ``z`` (``(D,)``).

        The model runs conditioned on the constrained values inside
        ``poutine.block``, so none of its sites reach an outer trace. As a part
        of an :class:`~guide_core.AutoGuideList` it is the list's whole model,
        conditioned also on what the other parts drew in this call.
        """
        values = self._layout.unpack(z)
        target, conditioned = self._target[0], {}
        if self.master is not None:
            target, conditioned = self.master()._given_other_parts(self)
        conditioned, log_det = dict(conditioned), z.new_zeros(())
        for slot in self._layout:
            u = values[slot.name]
            transform = slot.site.require_transform()
            value = transform(u)
            conditioned[slot.name] = value
            if value is not u:
                log_det = log_det + transform.log_abs_det_jacobian(u, value).sum()
        with poutine.block():
            model = poutine.condition(target, data=conditioned)
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        return trace.log_prob_sum() + log_det

    def _trajectory(
        self, args: tuple, kwargs: dict, create_graph: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run one trajectory; return ``z_K`` and ``log p(x, z_K) - log w``."""
        base = self.get_base_dist()
        z_0 = base.rsample()
        z, kinetic = anneal(
            z_0,
            lambda u: self._log_joint(u, args, kwargs),
            base.log_prob,
            eta=self.step_size,
            gamma=self.gamma,
            mass=self.mass_matrix,
            betas=self.betas,
            create_graph=create_graph,
        )
        return z, base.log_prob(z_0) - kinetic

    # -- the guide -----------------------------------------------------------------

    def sample_latent(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Run one trajectory and sample ``z_K`` at the site ``_AutoDAIS_latent``.

        The site is a point mass whose log density is the trajectory's
        ``log p(x, z_K) - log w``, so that the ELBO of this guide is ``log w``.
        """
        outer = [f.name for f in get_plates() if f.name not in self._prototype.plates]
        if outer:
            raise NotImplementedError(
                f"AutoDAIS runs one trajectory per call, but it is called inside the "
                f"plate(s) {', '.join(map(repr, outer))} (vectorize_particles=True, "
                "Predictive(parallel=True) or a plate around model and guide); use "
                "vectorize_particles=False / parallel=False"
            )
        z, log_density = self._trajectory(args, kwargs)
        point = dist.Delta(z, log_density=log_density, event_dim=1)
        return pyro.sample(
            f"_{self._pyro_name}_latent", point, infer={"is_auxiliary": True}
        )

    def log_weight(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Return the log-weight ``log w`` of one fresh trajectory (differentiable).

        ``E[log w]`` is the DAIS bound and ``E[w]`` the model's evidence.
        """
        self._ensure_setup(*args, **kwargs)
        z, log_density = self._trajectory(args, kwargs)
        return self._log_joint(z, args, kwargs) - log_density

    def _others_drawn(self, args: tuple, kwargs: dict) -> Any:
        """As a part of a list, a context in which the other parts have drawn
        their values (a summary marginalizes over them); else a no-op."""
        if self.master is None:
            return contextlib.nullcontext()
        return self.master()._other_parts_drawn(self, *args, **kwargs)

    def _summary_samples(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Draw :attr:`num_summary_samples` ``z_K`` from :attr:`summary_seed` on a
        fork of the random state (training is not perturbed)."""
        device = self._device()
        devices = [device.index or 0] if device.type == "cuda" else []
        draws = []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            torch.manual_seed(self.summary_seed)
            for _ in range(int(self.num_summary_samples)):
                with self._others_drawn(args, kwargs):
                    z, _ = self._trajectory(args, kwargs, create_graph=False)
                draws.append(z.detach())
        return torch.stack(draws)
