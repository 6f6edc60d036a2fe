"""What both DAIS guides share: their arguments, parameters and the annealed
Langevin trajectory itself.

A trajectory starts from a draw ``z_0`` of a base density ``q0`` and a fresh
momentum ``v_0 ~ N = Normal(0, M)``; step ``k`` (``1..K``) refreshes the
momentum, ``v'_k = gamma v_{k-1} + sqrt(1 - gamma^2) eps`` (skipped at
``k = 1``), then makes one leapfrog step of size ``eta`` on the potential
``-(1 - beta_k) log q0 - beta_k log p``. The leapfrog map preserves volume and
the refresh is reversible with respect to ``N``, so the trajectory's log
density relative to its end point is ``log q0(z_0) - sum_k [log N(v_k) -
log N(v'_k)]`` and ``log w = log p(z_K) - that`` is an importance weight with
``E[w] = p(x)``. :func:`anneal` runs a batch of independent trajectories at
once (one per leading index), which is what the semi-local guide needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch

__all__ = ["anneal", "check_dynamics", "logit_step", "schedule", "step_size"]

LogDensity = Callable[[torch.Tensor], torch.Tensor]


def check_dynamics(
    K: Any, eta_init: Any, eta_max: Any, gamma_init: Any
) -> tuple[int, float, float, float]:
    """Check the arguments of the dynamics; return them normalized.

    Raises
    ------
    ValueError
        Naming the argument and its value.
    """
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ValueError(f"'K' must be an int >= 1 (the number of steps): {K!r}")
    for name, value in (("eta_max", eta_max), ("eta_init", eta_init)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"'{name}' must be a float > 0: {value!r}")
    if not eta_max > 0:
        raise ValueError(f"'eta_max' must be > 0: {eta_max!r}")
    if not 0 < eta_init < eta_max:
        raise ValueError(
            f"'eta_init' must lie in (0, eta_max) = (0, {eta_max!r}): {eta_init!r}"
        )
    if isinstance(gamma_init, bool) or not isinstance(gamma_init, (int, float)):
        raise ValueError(f"'gamma_init' must be a float in (0, 1): {gamma_init!r}")
    if not 0 < gamma_init < 1:
        raise ValueError(f"'gamma_init' must lie in (0, 1): {gamma_init!r}")
    return K, float(eta_init), float(eta_max), float(gamma_init)


def logit_step(eta_init: float, eta_max: float) -> float:
    """The ``eta_coeff`` whose step size :func:`step_size` is ``eta_init``."""
    ratio = eta_init / eta_max
    return math.log(ratio / (1 - ratio))


def step_size(eta_coeff: torch.Tensor, eta_max: float) -> torch.Tensor:
    """The leapfrog step size ``eta_max * sigmoid(eta_coeff)``, in ``(0, eta_max)``."""
    return eta_max * torch.sigmoid(eta_coeff)


def schedule(beta_increments: torch.Tensor) -> torch.Tensor:
    """The schedule ``beta_1 < ... < beta_K = 1`` from positive increments
    (last dim ``K``)."""
    cumulative = beta_increments.cumsum(-1)
    return cumulative / cumulative[..., -1:]


def _grads(
    z: torch.Tensor,
    log_p: LogDensity,
    log_q: LogDensity,
    create_graph: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients in ``z`` of ``log_p`` and ``log_q`` (each a scalar sum over
    independent trajectories, so each row gets its own gradient)."""
    if not z.requires_grad:
        z = z.detach().requires_grad_()
    (grad_p,) = torch.autograd.grad(log_p(z), z, create_graph=create_graph)
    (grad_q,) = torch.autograd.grad(log_q(z), z, create_graph=create_graph)
    return grad_p, grad_q


def anneal(
    z: torch.Tensor,
    log_p: LogDensity,
    log_q: LogDensity,
    *,
    eta: torch.Tensor,
    gamma: torch.Tensor,
    mass: torch.Tensor,
    betas: torch.Tensor,
    create_graph: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``K`` annealed leapfrog steps from ``z`` (shape ``batch + (D,)``).

    Parameters
    ----------
    z : Tensor
        The start ``z_0``, one independent trajectory per batch index.
    log_p, log_q : callable
        The target's and the base's log densities, each summed over the batch.
    eta, gamma : Tensor
        Step size and damping, broadcastable to ``batch``.
    mass : Tensor
        The diagonal of the momentum's covariance, broadcastable to ``z``.
    betas : Tensor
        The schedule, shape broadcastable to ``batch + (K,)``.
    create_graph : bool
        Keep the graph of the gradients (training); ``False`` for summaries.

    Returns
    -------
    (Tensor, Tensor)
        ``z_K`` and, per trajectory, ``sum_k [log N(v_k) - log N(v'_k)]``.
        Under ``torch.no_grad()`` (e.g. ``Predictive``) the gradients of the
        dynamics are still taken, and the results are detached.
    """
    if not torch.is_grad_enabled():
        with torch.enable_grad():
            z, kinetic = anneal(
                z,
                log_p,
                log_q,
                eta=eta,
                gamma=gamma,
                mass=mass,
                betas=betas,
                create_graph=False,
            )
        return z.detach(), kinetic.detach()
    mass = mass.expand(z.shape)
    momentum = dist.Normal(torch.zeros_like(mass), mass.sqrt()).to_event(1)
    eta, gamma = eta[..., None], gamma[..., None]
    refresh = (1 - gamma * gamma).sqrt()
    v = momentum.rsample()
    kinetic = z.new_zeros(z.shape[:-1])
    grad_p, grad_q = _grads(z, log_p, log_q, create_graph)
    for k in range(betas.shape[-1]):
        if k > 0:
            v = gamma * v + refresh * momentum.rsample()
        beta = betas[..., k, None]
        log_n_before = momentum.log_prob(v)
        v = v + 0.5 * eta * (beta * grad_p + (1 - beta) * grad_q)
        z = z + eta * v / mass
        grad_p, grad_q = _grads(z, log_p, log_q, create_graph)
        v = v + 0.5 * eta * (beta * grad_p + (1 - beta) * grad_q)
        kinetic = kinetic + momentum.log_prob(v) - log_n_before
    return z, kinetic
