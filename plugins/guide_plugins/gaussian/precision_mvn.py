"""The ``dense`` back end's joint Gaussian, held in its reversed precision.

Notation: ``J`` reverses the coordinates, ``Q = J P J`` is the precision ``P``
with rows and columns reversed, ``F`` its lower Cholesky factor and ``R =
F^{-T}``. Then ``S = J R J`` is the lower Cholesky factor of the covariance,
so ``loc + S eps`` is the draw of ``MultivariateNormal(loc, scale_tril=S)``
for the noise ``eps`` -- computed by one triangular solve, without forming
``S`` -- and its log-density is ``log N(eps) + sum(log diag F)``.

:class:`DenseDraw` fuses assembling ``Q`` from the factors' precision entries,
factorising it and drawing, with a hand-written backward pass: the gradient of
the draw and of ``log det F`` with respect to ``Q`` is only evaluated at the
entries the factors fill (see :class:`CellPlan`), after one triangular
inverse (by blocks, :mod:`.triangular`), instead of autograd's dense Cholesky
backward (three ``N^3`` products).
``torch.jit.trace_module`` cannot export a Python ``autograd.Function``, so
while it records, the draw runs the same forward operations as plain autograd
ops instead (``JitTrace_ELBO``, which traces a function, keeps the fast one).
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution

from .triangular import upper_triangular_inverse

__all__ = ["CellPlan", "DenseDraw", "FlippedPrecisionMVN", "gram"]


def _solve_rows(flip_tril: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Return ``R r`` (``R = F^{-T}``) for each row ``r`` of ``rhs`` (``S x N``)."""
    return torch.linalg.solve_triangular(flip_tril.mT, rhs.mT, upper=True).mT


def _at(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` along the first dim (``index_select``: ~4x faster here)."""
    return x.index_select(0, index)


def _pair_dots(a, b, k, l_):
    """Return ``(a @ b.T)[k, l]`` for index vectors ``k``, ``l`` (few pairs)."""
    if k.numel() == 0:
        return a.new_zeros(0)
    chunk = max(1, (1 << 20) // a.size(-1))
    parts = [
        (_at(a, k[i : i + chunk]) * _at(b, l_[i : i + chunk])).sum(-1)
        for i in range(0, k.numel(), chunk)
    ]
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _draw(
    values: torch.Tensor,
    q: torch.Tensor,
    noise: torch.Tensor,
    cells: torch.Tensor,
    n: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Assemble ``Q``, factorise it and draw, in plain differentiable ops.

    Returns ``(x, half_log_det, F, Q^{-1} q)``. :class:`DenseDraw` runs exactly
    these operations forward, so the traced path (which calls this directly,
    leaving the gradient to autograd) gives bitwise the same draws.
    """
    flipped = values.new_zeros(n * n).index_add(0, cells, values)
    flip_tril = torch.linalg.cholesky(flipped.reshape(n, n))
    mean = torch.cholesky_solve(q.unsqueeze(-1), flip_tril).squeeze(-1)
    x = mean + _solve_rows(flip_tril, noise)
    return x, flip_tril.diagonal().log().sum(), flip_tril, mean


def _exporting() -> bool:
    """Whether ``torch.jit.trace_module`` is recording, whose graph must hold no
    Python ``autograd.Function``.

    ``torch.jit.trace`` of a function (as ``JitTrace_ELBO`` does) runs the
    graph in this process, where :class:`DenseDraw` (and its fast backward)
    is fine. ``trace_module`` is told by the module map torch sets while it
    runs; were that private name gone, every trace counts as exporting.
    """
    if not torch.jit.is_tracing():
        return False
    return getattr(torch.jit._trace, "_trace_module_map", True) is not None


class CellPlan:
    """How to read ``sym(H R^T)`` at a precision's filled cells cheaply.

    Diagonal cells come from one row-wise product; the rows and columns of the
    indices that have many partners ("hubs", e.g. global latents) from one
    thin matrix product each; the remaining pairs from gathered dot products.
    Where hubs are at least half the indices (a densely coupled Gaussian),
    those two thin products would cost more than the whole ``n x n`` product,
    so the plan is ``dense``: one product, read at the cells by one gather.
    Built once per layout.

    Parameters
    ----------
    cells : Tensor
        Flat positions in an ``n x n`` matrix whose pattern is symmetric.
    n : int
    hub_min : int
        Partners that make an index a hub.
    dense : bool, optional
        Force (or forbid) the dense plan; by default chosen as above.
    """

    def __init__(
        self, cells: torch.Tensor, n: int, hub_min: int = 16, dense: bool | None = None
    ):
        cells = cells.cpu()
        self.cells = cells
        k, l_ = cells // n, cells % n
        diag = k == l_
        counts = torch.bincount(k[~diag], minlength=n)
        is_hub = counts >= max(hub_min, 1)
        hubs = torch.nonzero(is_hub).squeeze(-1)
        hub_pos = torch.full((n,), -1, dtype=torch.long)
        hub_pos[hubs] = torch.arange(hubs.numel())
        row = ~diag & is_hub[k]
        col = ~diag & ~row & is_hub[l_]
        rest = ~diag & ~row & ~col
        nh = hubs.numel()
        self.n, self.size = n, cells.numel()
        self.k, self.l_ = k, l_
        self.hubs = hubs
        self.diag = (torch.nonzero(diag).squeeze(-1), k[diag])
        # cell (k, l), k a hub: G[k, l] = rows[pos k, l], G[l, k] = cols[l, pos k]
        pk = hub_pos[k[row]]
        self.row = (torch.nonzero(row).squeeze(-1), pk * n + l_[row], l_[row] * nh + pk)
        pl = hub_pos[l_[col]]
        self.col = (torch.nonzero(col).squeeze(-1), k[col] * nh + pl, pl * n + k[col])
        self.rest = (torch.nonzero(rest).squeeze(-1), k[rest], l_[rest])
        self.dense = 2 * nh >= n if dense is None else dense
        self._device_cache: dict = {}

    def on(self, device) -> CellPlan:
        """This plan with its index tensors on ``device``."""
        if device not in self._device_cache:
            moved = object.__new__(CellPlan)
            for name, value in vars(self).items():
                if isinstance(value, torch.Tensor):
                    value = value.to(device)
                elif isinstance(value, tuple):
                    value = tuple(v.to(device) for v in value)
                setattr(moved, name, value)
            moved._device_cache = {}
            self._device_cache[device] = moved
        return self._device_cache[device]

    def gradient(
        self, h: torch.Tensor, r: torch.Tensor, s: torch.Tensor, m: torch.Tensor
    ) -> torch.Tensor:
        """Return ``(G + G^T) / 2`` at every cell, ``G = h @ r.T - s m^T``."""
        if self.dense:
            g = h @ r.mT - s.unsqueeze(-1) * m
            return _at((0.5 * (g + g.mT)).reshape(-1), self.cells)
        k, l_ = self.k, self.l_
        outer = _at(s, k) * _at(m, l_) + _at(s, l_) * _at(m, k)
        return self.sym_dots(h, r) - 0.5 * outer

    def sym_dots(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Return ``(G + G^T) / 2`` at every cell, ``G = h @ r.T``."""
        out = h.new_empty(self.size)
        idx, kd = self.diag
        out.index_copy_(0, idx, _at((h * r).sum(-1), kd))
        if self.hubs.numel():
            rows = (_at(h, self.hubs) @ r.mT).reshape(-1)  # G[hub, :]
            cols = (h @ _at(r, self.hubs).mT).reshape(-1)  # G[:, hub]
            idx, a, b = self.row
            out.index_copy_(0, idx, 0.5 * (_at(rows, a) + _at(cols, b)))
            idx, a, b = self.col
            out.index_copy_(0, idx, 0.5 * (_at(cols, a) + _at(rows, b)))
        idx, k, l_ = self.rest
        if idx.numel():
            dots = _pair_dots(h, r, k, l_) + _pair_dots(h, r, l_, k)
            out.index_copy_(0, idx, 0.5 * dots)
        return out


class DenseDraw(torch.autograd.Function):
    """``(values, q, noise) -> (x, half_log_det)``: assemble, factorise, draw.

    ``Q`` is ``values`` scattered at the flat ``cells`` of an ``n x n`` matrix
    (``plan``, a :class:`CellPlan` of those cells, reads its gradient);
    ``x = Q^{-1} q + R noise`` (rows of ``noise``), ``half_log_det = sum(log
    diag F)``. ``noise`` gets no gradient.
    """

    @staticmethod
    def forward(ctx, values, q, noise, cells, plan):  # noqa: D102
        x, half_log_det, flip_tril, mean = _draw(values, q, noise, cells, plan.n)
        ctx.save_for_backward(flip_tril, mean, noise)
        ctx.plan = plan
        return x, half_log_det

    @staticmethod
    def backward(ctx, grad_x, grad_hld):  # noqa: D102
        flip_tril, mean, noise = ctx.saved_tensors
        plan = ctx.plan
        n = mean.size(-1)
        r = upper_triangular_inverse(flip_tril.mT)  # F^{-T}
        grad_x = grad_x.reshape(-1, n)
        a = grad_x @ r  # rows R^T g
        s = (a @ r.mT).sum(0)  # Sigma g, summed over draws
        # H = grad_hld / 2 R - sum_draws a_j (C + W / 2), W = R diag(u),
        # C_kj = sum_{i > j} W_ki; the gradient is G_kl = <H_k, R_l> - s_k m_l.
        h = (0.5 * grad_hld) * r
        for u, a_row in zip(noise.reshape(-1, n), a):
            w = r * u
            c = w.flip(-1).cumsum(-1).flip(-1) - 0.5 * w
            h = h - c * a_row
        return plan.gradient(h, r, s, mean), s, None, None, None


class _Gram(torch.autograd.Function):
    """``a @ a^T`` whose backward is one product, ``(g + g^T) a``.

    Autograd's backward of ``a @ a.mT`` takes one product per operand (two),
    though both are ``a``; a factor's precision is such a Gram matrix, and
    on a densely coupled model these products are most of the step.
    """

    @staticmethod
    def forward(ctx, a):  # noqa: D102
        ctx.save_for_backward(a)
        return a @ a.mT

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (a,) = ctx.saved_tensors
        return (grad + grad.mT) @ a


def gram(a: torch.Tensor) -> torch.Tensor:
    """Return ``a @ a.mT`` (batched), with a one-product backward."""
    if _exporting() or not a.requires_grad:  # see :func:`_exporting`
        return a @ a.mT
    return _Gram.apply(a)


class FlippedPrecisionMVN(dist.MultivariateNormal):
    """``MultivariateNormal`` given by its reversed precision (see the module).

    Parameters
    ----------
    values, cells : Tensor
        ``Q``'s entries and their flat positions in the ``n x n`` matrix.
    info : Tensor
        The information vector ``P loc``, shape ``(n,)``.
    batch_shape : torch.Size
        Independent copies (Pyro's particle plates).

    ``log_prob`` of the tensor returned by the latest ``rsample`` reuses that
    draw's noise (same value and gradient as recomputing it).
    """

    def __init__(self, values, cells, info, batch_shape: Any = (), plan=None):
        self._values, self._cells, self._info = values, cells, info
        self._plan = plan
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None
        n = info.size(-1)
        TorchDistribution.__init__(
            self, torch.Size(batch_shape), torch.Size([n]), validate_args=False
        )

    def _lazy(self, name: str, make):
        if name not in self.__dict__:
            self.__dict__[name] = make()
        return self.__dict__[name]

    @property
    def flip_tril(self) -> torch.Tensor:
        """``F``, differentiable (for densities at points other than a draw)."""

        def make():
            n = self._info.size(-1)
            flipped = self._values.new_zeros(n * n)
            flipped = flipped.index_add(0, self._cells, self._values)
            return torch.linalg.cholesky(flipped.reshape(n, n))

        return self._lazy("_flip_tril", make)

    @property
    def loc(self) -> torch.Tensor:
        def make():
            q = self._info.flip(-1).unsqueeze(-1)
            mean = torch.cholesky_solve(q, self.flip_tril).squeeze(-1).flip(-1)
            return mean.expand(self.batch_shape + self.event_shape)

        return self._lazy("_loc", make)

    @property
    def _unbroadcasted_scale_tril(self) -> torch.Tensor:
        def make():
            return upper_triangular_inverse(self.flip_tril.mT).flip(-2, -1)

        return self._lazy("_scale", make)

    def expand(self, batch_shape: Any, _instance: Any = None) -> FlippedPrecisionMVN:
        return FlippedPrecisionMVN(
            self._values, self._cells, self._info, batch_shape, self._plan
        )

    def _log_normal(self, sq: torch.Tensor, half_log_det: torch.Tensor):
        n = self.event_shape[0]
        return -0.5 * (n * math.log(2 * math.pi) + sq) + half_log_det

    def rsample(self, sample_shape: Any = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        info = self._info
        eps = torch.randn(shape, dtype=info.dtype, device=info.device)
        noise = eps.reshape(-1, shape[-1]).flip(-1)
        if _exporting():  # autograd's Cholesky backward: exportable
            x, half_log_det, _, _ = _draw(
                self._values, info.flip(-1), noise, self._cells, shape[-1]
            )
        else:
            plan = self._plan
            if plan is None:
                plan = self._plan = CellPlan(self._cells, shape[-1])
            plan = plan.on(info.device)
            x, half_log_det = DenseDraw.apply(
                self._values, info.flip(-1), noise, self._cells, plan
            )
        value = x.flip(-1).reshape(shape)
        self._last = (value, self._log_normal(eps.pow(2).sum(-1), half_log_det))
        return value

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._last is not None and value is self._last[0]:
            return self._last[1]
        white = (value - self.loc).flip(-1) @ self.flip_tril  # (S^{-1} x) reversed
        half_log_det = self.flip_tril.diagonal().log().sum()
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        return self._log_normal(white.pow(2).sum(-1), half_log_det).expand(shape)
