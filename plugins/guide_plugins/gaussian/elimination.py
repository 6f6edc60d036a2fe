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

__all__ = ["Solution", "broadcast_shape", "cat_last", "eliminate"]

ParamFn = Callable[[str], tuple[torch.Tensor, torch.Tensor]]


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


def _mv(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Batched matrix-vector product ``a @ x``."""
    return (a @ x.unsqueeze(-1)).squeeze(-1)


def cat_last(parts: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(parts, -1)``, without a copy when there is one part."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, -1)


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


def broadcast_shape(a: torch.Size, b: torch.Size) -> torch.Size:
    """``torch.broadcast_shapes`` of two shapes, without its Python overhead."""
    if a == b:
        return a
    if len(a) < len(b):
        a, b = b, a
    b = (1,) * (len(a) - len(b)) + tuple(b)
    return torch.Size(y if x == 1 else x for x, y in zip(a, b))


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
        self.log_det: torch.Tensor | None = None
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
        shape = broadcast_shape(full, group.batch)
        parts = [
            z[k] if z[k].shape[:-1] == shape else z[k].expand(shape + z[k].shape[-1:])
            for k in group.scope
        ]
        zs = cat_last(parts)
        return v - _mv(w, zs)

    def sample(
        self, outer: tuple[int, ...] = (), noise: bool = True
    ) -> dict[frozenset, torch.Tensor]:
        """Draw every group (``noise=False``: the mode).

        Each value has shape ``outer + batch + (size,)``: ``outer`` (sample
        and batch shape of the draw) sits left of every plate dim.
        """
        return self._draw(torch.Size(outer), noise)[0]

    def draw(
        self, outer: tuple[int, ...] = ()
    ) -> tuple[dict[frozenset, torch.Tensor], torch.Tensor]:
        """Draw every group and return it with its log-density (shape ``outer``).

        The draw is ``z = T(eps)`` for standard normal noise ``eps`` and an
        affine ``T`` whose Jacobian determinant is ``1 / det L``, so its
        log-density is ``log N(eps) + log det L``: the same function of the
        parameters as :meth:`log_prob` at ``z`` (value and gradient), without
        a second pass over the groups.
        """
        outer = torch.Size(outer)
        z, sq = self._draw(outer, True)
        const = self.log_det - 0.5 * self.size * math.log(2 * math.pi)
        return z, (-0.5 * sq + const).expand(outer)

    def _draw(self, outer: torch.Size, noise: bool):
        full = self._full(outer)
        depth = self.plan.depth
        z: dict[frozenset, torch.Tensor] = {}
        total = None
        for key in reversed(self.plan.order):
            rhs = self._mean_given_scope(key, z, full)
            shape = broadcast_shape(full, rhs.shape[:-1]) + rhs.shape[-1:]
            if noise:
                eps = torch.randn(shape, dtype=rhs.dtype, device=rhs.device)
                sq = eps.pow(2).sum(list(range(-depth - 1, 0)))
                total = sq if total is None else total + sq
                rhs = rhs + eps
            else:
                rhs = rhs.expand(shape)
            z[key] = _solve_upper_t(self.chol[key], rhs.unsqueeze(-1)).squeeze(-1)
        return z, total

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


def _fold(x: torch.Tensor, dims: tuple[int, ...], event_dim: int) -> torch.Tensor:
    """Move batch dims ``dims`` of ``x`` into its last dim (kept as size 1)."""
    if not dims:
        return x
    for d in dims:
        x = x.unsqueeze(-1).transpose(d - event_dim - 1, -1)
    return x.reshape(x.shape[: x.dim() - len(dims) - 1] + (-1,))


_LETTERS = "abcdefghijklm"


def _gram_sum(
    w: torch.Tensor, y: torch.Tensor, dims: tuple[int, ...], depth: int
) -> torch.Tensor:
    """Return ``w^T y`` summed over batch dims ``dims`` (kept as size 1).

    ``w`` is ``batch + (n, r)``; ``y`` is ``batch + (n, s)``.
    """
    if not dims:
        return w.mT @ y
    if all(w.size(i) == 1 for i in range(depth) if i - depth not in dims):
        # every plate is summed: one product over the stacked rows
        out = w.reshape(-1, w.size(-1)).mT @ y.reshape(-1, y.size(-1))
        return out.reshape((1,) * depth + out.shape)
    batch = _LETTERS[:depth]
    kept = "".join(c for i, c in enumerate(batch) if i - depth not in dims)
    out = torch.einsum(f"{batch}nr,{batch}ns->{kept}rs", w, y)
    shape = [1 if i - depth in dims else w.size(i) for i in range(depth)]
    return out.reshape(shape + list(out.shape[-2:]))


def _factor_layout(plan: EliminationPlan, key: frozenset, cols: list[int], device):
    """Positions of each factor's (folded) ``prec_sqrt`` entries in the group's
    ``m x D`` square root, cached on the plan per group, widths and device."""
    cache = plan.__dict__.setdefault("_factor_layouts", {})
    ck = (key, tuple(cols), device)
    if ck not in cache:
        m, total = plan.groups[key].width, sum(cols)
        parts, c0, i = [], 0, 0
        for kind, source in plan.inbox[key]:
            if kind != "factor":
                continue
            index = plan.factors[source].index
            c = torch.arange(c0, c0 + cols[i])
            parts.append((index[:, None] * total + c[None, :]).reshape(-1))
            c0 += cols[i]
            i += 1
        cells, rows = [], []
        for kind, source in plan.inbox[key]:
            if kind == "message":
                index = plan.messages[source].index
                cells.append((m * index[:, None] + index).reshape(-1))
                rows.append(index)
        msg = (torch.cat(cells).to(device), torch.cat(rows).to(device)) if rows else ()
        cache[ck] = (torch.cat(parts).to(device) if parts else None, total, *msg)
    return cache[ck]


def eliminate(plan: EliminationPlan, params: ParamFn) -> Solution:
    """Factorise the guide's Gaussian along ``plan``.

    Each group's factors are stacked into one square root ``P`` (``batch +
    (m, D)``; a factor's plates that the group lacks are folded into its
    columns), so that the group's precision is ``P P^T`` plus its messages.

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
        gb = group.batch
        roots, whites, cols = [], [], []
        msg_precs, msg_infos = [], []
        m, n = group.width, group.size
        for kind, source in plan.inbox[key]:
            if kind == "factor":
                white_vec, prec_sqrt = params(source)
                dims = plan.factors[source].sum_dims
                root = _fold(_pad(prec_sqrt, depth, 2), dims, 2)
                white = _fold(_pad(white_vec, depth, 1), dims, 1)
                k, d = root.shape[-2:]
                if root.shape[:-2] != gb:
                    root = root.expand(gb + (k, d))
                if white.shape[:-1] != gb:
                    white = white.expand(gb + (d,))
                roots.append(root.reshape(gb + (k * d,)))
                whites.append(white)
                cols.append(d)
            else:
                prec, info = messages.pop(source)
                k = info.size(-1)
                msg_precs.append(prec.expand(gb + (k, k)).reshape(gb + (k * k,)))
                msg_infos.append(info.expand(gb + (k,)))
        ref = roots[0] if roots else msg_infos[0]
        pos, total, *msg_index = _factor_layout(plan, key, cols, ref.device)
        if roots:
            flat = cat_last(roots)
            root = ref.new_zeros(gb + (m * total,)).index_add(-1, pos, flat)
            root = root.reshape(gb + (m, total))
            white = cat_last(whites)
            prec = root @ root.mT
            info = _mv(root, white)
        else:
            prec = ref.new_zeros(gb + (m, m))
            info = ref.new_zeros(gb + (m,))
        if msg_precs:
            cells, msg_rows = msg_index
            prec = prec.reshape(gb + (m * m,))
            prec = prec.index_add(-1, cells, cat_last(msg_precs))
            prec = prec.reshape(gb + (m, m))
            info = info.index_add(-1, msg_rows, cat_last(msg_infos))
        lower = _cholesky(prec if m == n else prec[..., :n, :n])
        if m == n:
            sol.shifts[key] = _solve_lower(lower, info.unsqueeze(-1)).squeeze(-1)
            sol.weights[key] = None
        else:
            rhs = torch.cat([info[..., :n, None], prec[..., :n, n:]], -1)
            solved = _solve_lower(lower, rhs)
            v, w = solved[..., 0], solved[..., 1:]
            sol.shifts[key], sol.weights[key] = v, w
            dims = group.sum_dims
            gram = _gram_sum(w, solved, dims, depth)  # W^T [v, W], summed
            schur = _sum_batch(prec[..., n:, n:], dims, 2) - gram[..., 1:]
            rest = _sum_batch(info[..., n:], dims, 1) - gram[..., 0]
            messages[key] = (schur, rest)
        sol.chol[key] = lower
        log_det = lower.diagonal(dim1=-2, dim2=-1).log().sum()
        sol.log_det = log_det if sol.log_det is None else sol.log_det + log_det
    return sol
