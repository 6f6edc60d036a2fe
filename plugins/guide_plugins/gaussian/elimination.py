"""Numbers of the ``sparse`` back end: batched block Cholesky along a plan.

:func:`eliminate` runs an :class:`~.plan.EliminationPlan` on the current
parameters and returns a :class:`Solution`. For each group (innermost first) it
assembles, batched over the group's plates, the precision ``A`` and
information ``b`` of ``[group, *scope]``, factorises the group's own block
``A_gg = L L^T``, and passes the Schur complement on to the next group out.
Sampling runs the other way: outermost first, each group is drawn given the
groups of its scope, ``z_g = L^{-T} (v - W z_scope + eps)`` with
``v = L^{-1} b_g`` and ``W = L^{-1} A_g,scope``. Every step is a batch of small
matrices, so cost and memory are linear in the plate sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .plan import EliminationPlan

__all__ = ["Solution", "eliminate"]

ParamFn = Callable[[str], tuple[torch.Tensor, torch.Tensor]]


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


def _mv(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Batched matrix-vector product ``a @ x``."""
    return (a @ x.unsqueeze(-1)).squeeze(-1)


def _cholesky(a: torch.Tensor) -> torch.Tensor:
    if a.size(-1) == 1:
        return a.sqrt()
    return torch.linalg.cholesky(a)


def _solve_lower(lower: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve ``L x = b`` for a lower-triangular ``L`` (``b`` has a matrix shape)."""
    if lower.size(-1) == 1:
        return b / lower
    return torch.linalg.solve_triangular(lower, b, upper=False)


def _solve_upper_t(lower: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve ``L^T x = b`` for a lower-triangular ``L``."""
    if lower.size(-1) == 1:
        return b / lower
    return torch.linalg.solve_triangular(lower.mT, b, upper=True)


def _cholesky_inverse(lower: torch.Tensor) -> torch.Tensor:
    """Return ``(L L^T)^{-1}``."""
    if lower.size(-1) == 1:
        return lower.pow(-2)
    return torch.cholesky_inverse(lower)


def _pad(x: torch.Tensor, depth: int, event_dim: int) -> torch.Tensor:
    """Left-pad the batch shape of ``x`` with ones to ``depth`` dims."""
    missing = depth - (x.dim() - event_dim)
    return x.reshape((1,) * missing + x.shape) if missing > 0 else x


def _sum_batch(x: torch.Tensor, dims: tuple[int, ...], event_dim: int) -> torch.Tensor:
    if not dims:
        return x
    return x.sum([d - event_dim for d in dims], keepdim=True)


class Solution:
    """The factorised Gaussian of the auxiliary latents, group by group.

    Attributes
    ----------
    plan : EliminationPlan
    chol, weights, shifts : dict
        Per group: ``L`` (batch + (n, n)), ``W`` (batch + (n, r), or ``None``
        without a scope) and ``v`` (batch + (n,)).
    log_det : Tensor
        ``log det`` of the whole precision, halved (``sum log diag L``).
    size : int
        The number of auxiliary coordinates.
    """

    def __init__(self, plan: EliminationPlan):
        self.plan = plan
        self.chol: dict[frozenset, torch.Tensor] = {}
        self.weights: dict[frozenset, torch.Tensor | None] = {}
        self.shifts: dict[frozenset, torch.Tensor] = {}
        self.log_det: torch.Tensor | float = 0.0
        self.size = sum(v.numel for v in plan.structure.latents.values())

    def _full(self, outer: torch.Size) -> torch.Size:
        return torch.Size(outer) + (1,) * self.plan.depth

    def _mean_given_scope(
        self, key: frozenset, z: dict[frozenset, torch.Tensor], full: torch.Size
    ) -> torch.Tensor:
        """Return ``v - W z_scope`` (the conditional mean of ``L^T z_g``)."""
        v, w = self.shifts[key], self.weights[key]
        if w is None:
            return v
        group = self.plan.groups[key]
        shape = torch.broadcast_shapes(full, group.batch)
        parts = [z[k].expand(shape + (z[k].size(-1),)) for k in group.scope]
        zs = parts[0] if len(parts) == 1 else torch.cat(parts, -1)
        return v - _mv(w, zs)

    def sample(
        self, outer: tuple[int, ...] = (), noise: bool = True
    ) -> dict[frozenset, torch.Tensor]:
        """Draw every group (``noise=False``: the mode).

        Each value has shape ``outer + batch + (size,)``: ``outer`` (sample
        and batch shape of the draw) sits left of every plate dim.
        """
        full = self._full(torch.Size(outer))
        z: dict[frozenset, torch.Tensor] = {}
        for key in reversed(self.plan.order):
            rhs = self._mean_given_scope(key, z, full)
            shape = torch.broadcast_shapes(full, rhs.shape[:-1]) + rhs.shape[-1:]
            if noise:
                rhs = rhs + torch.randn(shape, dtype=rhs.dtype, device=rhs.device)
            else:
                rhs = rhs.expand(shape)
            z[key] = _solve_upper_t(self.chol[key], rhs.unsqueeze(-1)).squeeze(-1)
        return z

    def log_prob(
        self, z: dict[frozenset, torch.Tensor], outer: torch.Size
    ) -> torch.Tensor:
        """Return the log-density of group values ``z``, of shape ``outer``."""
        full = self._full(outer)
        depth = self.plan.depth
        total = 0.0
        for key in self.plan.order:
            lower = self.chol[key]
            whitened = _mv(lower.mT, z[key])
            resid = whitened - self._mean_given_scope(key, z, full)
            sq = resid.pow(2).sum(-1)
            if depth:
                sq = sq.sum(list(range(-depth, 0)))
            total = total + sq
        const = self.log_det - 0.5 * self.size * math.log(2 * math.pi)
        return (-0.5 * total + const).expand(outer)

    def moments(self) -> dict[frozenset, tuple[torch.Tensor, torch.Tensor]]:
        """Return each group's marginal ``(mean, std)``, batched over its plates."""
        mean = self.sample(noise=False)  # outer = (): batch + (size,)
        cov: dict[frozenset, torch.Tensor] = {}
        out = {}
        for key in reversed(self.plan.order):
            lower, w = self.chol[key], self.weights[key]
            own = _cholesky_inverse(lower)
            if w is None:
                cov[key] = own
            else:
                group = self.plan.groups[key]
                index = self.plan.scope_index(key).to(lower.device)
                parent_cov = cov[group.receiver]
                c_a = parent_cov.index_select(-2, index).index_select(-1, index)
                b = _solve_upper_t(lower, w)  # L^{-T} W
                cross = -(b @ c_a)
                own = own - cross @ b.mT
                c_a = c_a.expand(cross.shape[:-2] + c_a.shape[-2:])
                top = torch.cat([own, cross], -1)
                bottom = torch.cat([cross.mT, c_a], -1)
                cov[key] = torch.cat([top, bottom], -2)
            out[key] = (mean[key], own.diagonal(dim1=-2, dim2=-1).sqrt())
        return out


def eliminate(plan: EliminationPlan, params: ParamFn) -> Solution:
    """Factorise the guide's Gaussian along ``plan``.

    Parameters
    ----------
    plan : EliminationPlan
    params : callable
        ``params(factor name)`` returns its ``(white_vec, prec_sqrt)``.
    """
    sol = Solution(plan)
    depth = plan.depth
    messages: dict[frozenset, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in plan.order:
        group = plan.groups[key]
        precs, infos = [], []
        for kind, source in plan.inbox[key]:
            if kind == "factor":
                white_vec, prec_sqrt = params(source)
                prec_sqrt = _pad(prec_sqrt, depth, 2)
                prec = _mm(prec_sqrt, prec_sqrt.mT)
                info = _mv(prec_sqrt, _pad(white_vec, depth, 1))
                dims = plan.factors[source].sum_dims
                prec, info = _sum_batch(prec, dims, 2), _sum_batch(info, dims, 1)
            else:
                prec, info = messages.pop(source)
            k = info.size(-1)
            precs.append(
                prec.expand(group.batch + (k, k)).reshape(group.batch + (k * k,))
            )
            infos.append(info.expand(group.batch + (k,)))
        rows, cells = plan.scatter[key]
        m, n = group.width, group.size
        device = infos[0].device
        info = infos[0].new_zeros(group.batch + (m,))
        info = info.index_add(-1, rows.to(device), torch.cat(infos, -1))
        prec = infos[0].new_zeros(group.batch + (m * m,))
        prec = prec.index_add(-1, cells.to(device), torch.cat(precs, -1))
        prec = prec.reshape(group.batch + (m, m))
        lower = _cholesky(prec[..., :n, :n])
        if m == n:
            sol.shifts[key] = _solve_lower(lower, info.unsqueeze(-1)).squeeze(-1)
            sol.weights[key] = None
        else:
            rhs = torch.cat([info[..., :n, None], prec[..., :n, n:]], -1)
            solved = _solve_lower(lower, rhs)
            v, w = solved[..., 0], solved[..., 1:]
            sol.shifts[key], sol.weights[key] = v, w
            schur = prec[..., n:, n:] - _mm(w.mT, w)
            rest = info[..., n:] - _mv(w.mT, v)
            dims = group.sum_dims
            messages[key] = (_sum_batch(schur, dims, 2), _sum_batch(rest, dims, 1))
        sol.chol[key] = lower
        sol.log_det = sol.log_det + lower.diagonal(dim1=-2, dim2=-1).log().sum()
    return sol
