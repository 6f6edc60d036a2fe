"""The flat layout of the joint Gaussian over every auxiliary coordinate.

:class:`DenseLayout` scatters each factor's precision and information vector
into one ``N x N`` matrix (``N`` = all unconstrained coordinates). It serves
the ``dense`` back end (:class:`~.dense.AutoGaussianDense`) and the dense
fallback of every back end's summaries (:meth:`~.base.AutoGaussian._aux_moments`),
so it depends on neither of those modules.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import torch

from guide_core import PlateFacts

from .precision_mvn import CellPlan, FlippedPrecisionMVN, gram
from .structure import GaussianStructure, plate_shape, unflatten

__all__ = ["DenseLayout", "ParamFn", "fold_plates"]

ParamFn = Callable[[str], tuple[torch.Tensor, torch.Tensor]]


def fold_plates(
    x: torch.Tensor, plates: Iterable[PlateFacts], kept: Iterable[PlateFacts]
) -> torch.Tensor:
    """Fold the plates of ``x`` that are not in ``kept`` into its last dim.

    ``x`` is batched over ``plates`` (shape ``plate_shape(plates) + (e,)``); the
    result is batched over the kept ones, each folded plate moving (outermost
    first) in front of the ``e`` coordinates of the last dim.
    """
    plates = frozenset(plates)
    kept = frozenset(kept) & plates
    folded = plates - kept
    if not folded:
        return x
    moved = sorted(p.dim - 1 for p in folded)
    perm = [d for d in range(-x.dim(), -1) if d not in moved] + moved + [-1]
    return x.permute([d % x.dim() for d in perm]).reshape(plate_shape(kept) + (-1,))


class DenseLayout:
    """Where each factor's precision entries go in the flat ``N x N`` matrix.

    Parameters
    ----------
    structure : GaussianStructure
        The factor graph.
    """

    def __init__(self, structure: GaussianStructure):
        self.structure = structure
        index, pos, cpu = {}, 0, torch.device("cpu")
        for name, latent in structure.latents.items():
            idx = torch.arange(pos, pos + latent.numel, device=cpu)
            index[name] = idx.reshape(latent.batch_shape + (-1,))
            pos += latent.numel
        self.size = pos
        self.scatter: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, factor in structure.factors.items():
            batch = factor.batch_shape
            rows = torch.zeros(batch + (factor.u_size,), dtype=torch.long, device=cpu)
            blocks, start = {}, 0
            for u in factor.upstreams:
                latent = structure.latents[u]
                u_index = fold_plates(index[u], latent.plates, factor.plates)
                blocks[u] = (slice(start, start + u_index.size(-1)), u_index)
                rows[..., blocks[u][0]] = u_index
                start += u_index.size(-1)
            cells = torch.zeros(
                batch + (factor.u_size, factor.u_size), dtype=torch.long, device=cpu
            )
            for u, v in itertools.product(factor.upstreams, repeat=2):
                (su, iu), (sv, iv) = blocks[u], blocks[v]
                cells[..., su, sv] = self.size * iu.unsqueeze(-1) + iv.unsqueeze(-2)
            self.scatter[name] = rows.reshape(-1), cells.reshape(-1)

    def mvn(self, params: ParamFn) -> FlippedPrecisionMVN:
        """Return the joint Gaussian of the flat aux vector for these parameters.

        ``params(name)`` returns factor ``name``'s ``(white_vec, prec_sqrt)``.
        The precision is kept as its entries, reversed (see
        :class:`FlippedPrecisionMVN`), and factorised once per draw.
        """
        infos, precs = [], []
        for name in self.scatter:
            white_vec, prec_sqrt = params(name)
            infos.append((prec_sqrt @ white_vec.unsqueeze(-1)).reshape(-1))
            precs.append(gram(prec_sqrt).reshape(-1))
        ref = infos[0]
        rows, cells = self._indices(ref.device)
        info = ref.new_zeros(self.size).index_add(0, rows, torch.cat(infos))
        if "_cell_plan" not in self.__dict__:
            self._cell_plan = CellPlan(cells, self.size)
        return FlippedPrecisionMVN(torch.cat(precs), cells, info, (), self._cell_plan)

    def _indices(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Every factor's rows and (reversed) cells, concatenated, on ``device``."""
        cache = self.__dict__.setdefault("_index_cache", {})
        if device not in cache:
            rows = torch.cat([r for r, _ in self.scatter.values()])
            cells = torch.cat([c for _, c in self.scatter.values()])
            cells = self.size**2 - 1 - cells  # (i, j) -> (N-1-i, N-1-j)
            cache[device] = rows.to(device), cells.to(device)
        return cache[device]

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split flat aux vectors into ``{site: tensor}`` shaped like each site."""
        return unflatten(flat, self.structure.latents)

    def flatten(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate ``{site: tensor}`` into flat aux vectors (inverse of
        :meth:`unflatten`)."""
        parts = []
        for name, latent in self.structure.latents.items():
            value = values[name]
            event = len(latent.batch_shape) + len(latent.event_shape)
            parts.append(value.reshape(value.shape[: value.dim() - event] + (-1,)))
        return torch.cat(parts, dim=-1)

    def moments(self, params: ParamFn) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Return each site's marginal aux ``(mean, std)``."""
        mvn = self.mvn(params)
        std = mvn.scale_tril.pow(2).sum(-1).sqrt()
        means, stds = self.unflatten(mvn.loc), self.unflatten(std)
        return {n: (means[n], stds[n]) for n in means}
