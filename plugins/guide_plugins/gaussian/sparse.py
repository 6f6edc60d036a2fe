"""The ``sparse`` back end (ours): batched block Cholesky over the plates.

Pure torch, cost and memory linear in the plate sizes, the same distribution
as ``dense``. The joint draw is the auxiliary site
``_AutoGaussianSparse_latent``, a flat vector laid out exactly as dense's, whose
distribution :class:`SparseGaussian` factorises the precision group by group
(a model without plates has one group: its draw is the dense back end's).
"""

from __future__ import annotations

from typing import Any

import pyro
import torch
from pyro.distributions import TorchDistribution, constraints

from .base import AutoGaussian
from .dense_layout import DenseLayout
from .elimination import Solution, broadcast_shape, cat_last, eliminate
from .plan import EliminationPlan
from .structure import unflatten

__all__ = ["AutoGaussianSparse", "SparseGaussian"]


def _groups_to_flat(
    plan: EliminationPlan, z: dict[frozenset, torch.Tensor], outer: torch.Size
) -> torch.Tensor:
    # [group key, lo, hi]; consecutive members of an unbatched group merged
    runs: list[list] = []
    for name, latent in plan.structure.latents.items():
        group = plan.groups[latent.plates]
        lo, hi = group.offsets[name]
        last = runs[-1] if runs else None
        if last and last[0] == latent.plates and last[2] == lo and not latent.plates:
            runs[-1][2] = hi
        else:
            runs.append([latent.plates, lo, hi])
    parts = []
    for key, lo, hi in runs:
        part = z[key] if hi - lo == plan.groups[key].size else z[key][..., lo:hi]
        parts.append(part.reshape(outer + (-1,)))
    return cat_last(parts)


def _flat_to_groups(plan: EliminationPlan, flat: torch.Tensor) -> dict:
    outer = flat.shape[:-1]
    members: dict[frozenset, list[torch.Tensor]] = {k: [] for k in plan.order}
    pos = 0
    for latent in plan.structure.latents.values():
        group = plan.groups[latent.plates]
        part = flat[..., pos : pos + latent.numel]
        members[latent.plates].append(part.reshape(outer + group.batch + (-1,)))
        pos += latent.numel
    return {k: cat_last(v) for k, v in members.items()}


class SparseGaussian(TorchDistribution):
    """The joint Gaussian of the flat aux vector, held in factorised form.

    Parameters
    ----------
    solution : Solution
        The factorisation from :func:`~.elimination.eliminate`.
    batch_shape : torch.Size
        Independent copies (Pyro's particle plates); ones at the plate dims.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, solution: Solution, batch_shape: Any = ()):
        self.solution = solution
        super().__init__(
            torch.Size(batch_shape), torch.Size([solution.size]), validate_args=False
        )

    def expand(self, batch_shape: Any, _instance: Any = None) -> SparseGaussian:
        return SparseGaussian(self.solution, batch_shape)

    def rsample(self, sample_shape: Any = ()) -> torch.Tensor:
        outer = torch.Size(sample_shape) + self.batch_shape
        z, log_prob = self.solution.draw(outer)
        flat = _groups_to_flat(self.solution.plan, z, outer)
        # The density of the latest draw comes with it (see Solution.draw).
        self._last = (flat, z, log_prob)
        return flat

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        last = getattr(self, "_last", None)
        if last is not None and value is last[0]:
            return last[2]
        z = _flat_to_groups(self.solution.plan, value)
        return self.solution.log_prob(z, value.shape[:-1])

    @property
    def mean(self) -> torch.Tensor:
        z = self.solution.sample(self.batch_shape, noise=False)
        return _groups_to_flat(self.solution.plan, z, self.batch_shape)


class AutoGaussianSparse(AutoGaussian):
    """:class:`AutoGaussian` by batched block Cholesky over plates (``"sparse"``).

    The latents sitting in the same plates are eliminated together, innermost
    plates first, with batched small Cholesky factorisations, so time and
    memory grow linearly with the plate sizes, without funsor's overhead. It
    handles plates that nest like a tree (globals, locals in one or more
    plates, locals nested in locals, observations in extra plates); for
    crossed plates or a site that depends on a latent outside its own plates
    it raises an error naming them (use ``backend="dense"`` there). Without
    plates there is one group, one dense Cholesky: the draw is then the
    ``dense`` back end's, whose backward pass is cheaper than autograd's.
    ``AutoGaussianSparse(model)`` equals ``AutoGaussian(model, backend="sparse")``.
    """

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        self._plan = EliminationPlan(self._structure)
        # one unplated group: the same distribution, drawn as dense draws it,
        # through the layout the summaries' dense fallback also uses
        self._one_group = list(self._plan.groups) == [frozenset()]
        if self._one_group:
            self._dense_layout = DenseLayout(self._structure)

    def _solve(self) -> Solution:
        return eliminate(self._plan, self._factor_params)

    def _site_values(self, z: dict[frozenset, torch.Tensor], outer=()) -> dict:
        out = {}
        for name, latent in self._structure.latents.items():
            group = self._plan.groups[latent.plates]
            lo, hi = group.offsets[name]
            value = z[latent.plates]
            if hi - lo != group.size:
                value = value[..., lo:hi]
            shape = broadcast_shape(torch.Size(outer), latent.batch_shape)
            out[name] = value.reshape(shape + latent.event_shape)
        return out

    def _sample_aux_values(self, *, temperature: float) -> dict[str, torch.Tensor]:
        if temperature == 0:
            return self._site_values(self._solve().sample(noise=False))
        if temperature != 1:
            raise ValueError(f"temperature must be 0 or 1, got {temperature!r}")
        if self._one_group:
            mvn = self._dense_layout.mvn(self._factor_params)
            flat = pyro.sample(self._aux_name, mvn, infer={"is_auxiliary": True})
            return self._dense_layout.unflatten(flat)
        latent = SparseGaussian(self._solve())
        flat = pyro.sample(self._aux_name, latent, infer={"is_auxiliary": True})
        last = getattr(latent, "_last", None)
        if last is not None and last[0] is flat:  # our own draw: skip re-slicing
            return self._site_values(last[1], flat.shape[:-1])
        return unflatten(flat, self._structure.latents)

    def _aux_moments(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        moments = self._solve().moments()
        means = self._site_values({k: m for k, (m, _) in moments.items()})
        stds = self._site_values({k: s for k, (_, s) in moments.items()})
        return {n: (means[n], stds[n]) for n in means}
