"""The distributed eager engine: disjoint subsample shares, one all-reduce.

Every rank draws the same global subsample of each subsampled plate (one
permutation per draw from a generator seeded alike on every rank) and keeps
its own slice of it: the union over the ranks is one subsample of the size the
model asked for. Each rank's plate has ``subsample_size / world_size``
elements, so its likelihood scale is ``size / local``; averaging the ranks'
gradients then gives exactly the gradient of one process with the global
subsample. Plates that are not subsampled run whole on every rank.

Pyro checks that a plate's ``subsample_size`` equals the length of its
indices, so while a step runs :func:`split_subsamples` gives subsampled plates
their local size (a patch of ``SubsampleMessenger._subsample``, undone after
the step) and :class:`ShareSubsamples`, a messenger, sets the indices of each
subsample site not already set (by the user or a replayed guide).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import SubsampleMessenger
from pyro.poutine.util import site_is_subsample

from ..distributed import ProcessGroup
from .eager import EagerTrainer, check_finite, eager_loss_and_grads

__all__ = ["DistributedTrainer", "ShareSubsamples", "local_size", "split_subsamples"]


def local_size(name: str, size: int, subsample_size: int, world_size: int) -> int:
    """A rank's share of plate ``name``'s subsample; raise if it does not divide."""
    if subsample_size % world_size:
        raise ValueError(
            f"plate {name!r}: subsample_size={subsample_size} is not divisible by "
            f"the {world_size} processes of the distributed fit; use a multiple of "
            f"{world_size} (each process takes subsample_size / {world_size})"
        )
    return subsample_size // world_size


@contextlib.contextmanager
def split_subsamples(world_size: int) -> Iterator[None]:
    """Give subsampled plates their per-rank size while the block runs."""
    original = SubsampleMessenger.__dict__["_subsample"]
    inner = original.__func__

    def _subsample(
        name: str,
        size: int | None = None,
        subsample_size: int | None = None,
        subsample: Any = None,
        use_cuda: bool | None = None,
        device: str | None = None,
    ) -> tuple:
        if (
            size is not None
            and subsample is None
            and subsample_size is not None
            and subsample_size < size
        ):
            subsample_size = local_size(name, size, subsample_size, world_size)
        return inner(name, size, subsample_size, subsample, use_cuda, device)

    SubsampleMessenger._subsample = staticmethod(_subsample)
    try:
        yield
    finally:
        SubsampleMessenger._subsample = original


class ShareSubsamples(Messenger):
    """Set each subsample site's indices to this rank's share of a global draw.

    Parameters
    ----------
    rank, world_size : int
        This rank and the number of ranks.
    generator : torch.Generator
        Seeded alike on every rank, so all draw the same permutations.
    """

    def __init__(self, rank: int, world_size: int, generator: torch.Generator):
        super().__init__()
        self.rank, self.world_size, self.generator = rank, world_size, generator

    def _pyro_sample(self, msg: Any) -> None:
        if not site_is_subsample(msg) or msg["value"] is not None or msg["done"]:
            return
        fn = msg["fn"]
        size, local = fn.size, fn.subsample_size
        if local is None or local * self.world_size >= size:
            return  # not subsampled: every rank takes the whole plate
        order = torch.randperm(size, generator=self.generator)
        start = self.rank * local
        msg["value"] = order[start : start + local].to(fn.device or "cpu")


class DistributedTrainer(EagerTrainer):
    """Pyro's eager step on each rank's share, gradients averaged before the update.

    Parameters
    ----------
    svi : pyro.infer.SVI
        The model, guide, optimizer and ELBO.
    args, kwargs :
        The model's arguments.
    group : ProcessGroup
        The ranks.
    reason : str
        Why this engine (shown with the fit).
    """

    engine = "eager"

    def __init__(
        self, svi: SVI, args: tuple, kwargs: dict, group: ProcessGroup, reason: str
    ):
        super().__init__(svi, args, kwargs, reason=reason)
        self.group = group
        self.share: ShareSubsamples | None = None

    def setup(self) -> None:
        """Create the params (one guide and model run), then take rank 0's."""
        seed = self.group.shared_seed()
        pyro.set_rng_seed((seed + self.group.rank) % 2**32)
        generator = torch.Generator().manual_seed(seed)
        self.share = ShareSubsamples(self.group.rank, self.group.world_size, generator)
        with split_subsamples(self.group.world_size), self.share, torch.no_grad():
            guide_trace = poutine.trace(self.svi.guide).get_trace(
                *self.args, **self.kwargs
            )
            poutine.trace(poutine.replay(self.svi.model, trace=guide_trace)).get_trace(
                *self.args, **self.kwargs
            )
        self.group.broadcast_params()

    def step(self, number: int) -> float:
        """Run step ``number`` on this rank's share; return the mean loss."""
        if self.share is None:
            self.setup()
        assert self.share is not None
        with split_subsamples(self.group.world_size), self.share:
            loss, params = eager_loss_and_grads(self.svi, self.args, self.kwargs)
        self.params.update(params)
        ordered = [params[name] for name in sorted(params)]
        loss = self.group.average(number, loss, ordered)
        check_finite(number, loss, {n: p.grad for n, p in params.items()})
        self.svi.optim(ordered)
        for p in ordered:
            p.grad = None
        return loss
