"""Each rank's share of the subsamples, and the ranks as a trainer's peers.

Every rank draws the same global subsample of each subsampled plate (from a
generator seeded alike on every rank; :func:`random_subset`, which costs
``O(k log k)`` where Pyro's plate pays ``O(size)``) and keeps its own slice of
it: the union over the ranks is one subsample of the size the
model asked for. Each rank's plate has ``subsample_size / world_size``
elements, so its likelihood scale is ``size / local``; averaging the ranks'
gradients then gives exactly the gradient of one process with the global
subsample. Plates that are not subsampled run whole on every rank.

The shares of a step are drawn once, before it, and given to the model and
guide as extra keyword tensors (:meth:`Ranks.inputs`) that a wrapper
(:meth:`ShareSubsamples.wrap`) takes off again and hands to the messenger
that sets each subsample site's indices. So a recorded program takes them as
inputs, fresh every step, and the check against eager sees the same indices.

Pyro checks that a plate's ``subsample_size`` equals the length of its
indices, inside the plate's constructor, before any handler sees the plate;
no handler can change the size it compares with. So :func:`split_subsamples`
gives subsampled plates their local size through a wrapper of
``SubsampleMessenger._subsample``, installed once and active only in the
context (a :class:`~contextvars.ContextVar`, so per thread) that asked for it.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import SubsampleMessenger
from pyro.poutine.util import site_is_subsample

from .eager import BadStep
from .process_group import DistributedError, ProcessGroup

__all__ = [
    "Ranks",
    "ShareSubsamples",
    "local_size",
    "random_subset",
    "split_subsamples",
]

_PREFIX = "_guide_core_share:"  # the keyword of a plate's share: prefix + name
_WORLD: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "guide_core_subsample_world", default=None
)
_INSTALL = threading.Lock()


def local_size(name: str, size: int, subsample_size: int, world_size: int) -> int:
    """A rank's share of plate ``name``'s subsample; raise if it does not divide."""
    if subsample_size % world_size:
        raise ValueError(
            f"plate {name!r}: subsample_size={subsample_size} is not divisible by "
            f"the {world_size} processes of the distributed fit; use a multiple of "
            f"{world_size} (each process takes subsample_size / {world_size})"
        )
    return subsample_size // world_size


def random_subset(size: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` distinct indices of ``range(size)``, a uniformly random subset in
    random order.

    For ``k`` well below ``size`` this avoids a permutation of all ``size``
    indices (Pyro's plate draws one each step: 50 ms at a million rows): the
    distinct values among ``k + m`` independent uniform draws are, given how
    many there are, a uniformly random subset of that many, so ``k`` of them
    taken at random are a uniformly random ``k``-subset (a draw with fewer
    than ``k`` distinct values is redrawn).
    """
    if 4 * k >= size:
        return torch.randperm(size, generator=generator)[:k]
    extra = 2 * (k * k // size) + 16  # twice the expected repeats, and some
    while True:
        draws = torch.randint(size, (k + extra,), generator=generator)
        distinct = torch.unique(draws)
        if len(distinct) >= k:
            return distinct[torch.randperm(len(distinct), generator=generator)[:k]]


def _install() -> None:
    """Wrap ``SubsampleMessenger._subsample`` once (a no-op outside the context)."""
    with _INSTALL:
        inner = SubsampleMessenger.__dict__["_subsample"].__func__
        if getattr(inner, "_guide_core_local", False):
            return

        def _subsample(
            name: str,
            size: Any = None,
            subsample_size: Any = None,
            subsample: Any = None,
            *rest: Any,
            **kw: Any,
        ) -> tuple:
            world = _WORLD.get()
            if (
                world is not None
                and size is not None
                and subsample is None
                and subsample_size is not None
                and subsample_size < size
            ):
                subsample_size = local_size(name, size, subsample_size, world)
            return inner(name, size, subsample_size, subsample, *rest, **kw)

        _subsample._guide_core_local = True  # type: ignore[attr-defined]
        SubsampleMessenger._subsample = staticmethod(_subsample)


@contextlib.contextmanager
def split_subsamples(world_size: int) -> Iterator[None]:
    """Give subsampled plates their per-rank size while the block runs (this
    thread or task only)."""
    _install()
    token = _WORLD.set(world_size)
    try:
        yield
    finally:
        _WORLD.reset(token)


class ShareSubsamples(Messenger):
    """Set each subsample site's indices to this rank's share of a global draw.

    The shares given for the run (:meth:`wrap`) are used; a subsampled plate
    without one draws its share here and is remembered, so that
    :meth:`draw` gives it one from the next step on.

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
        self.plates: dict[str, tuple[int, int, Any]] = {}  # size, local, device
        self.given: dict[str, torch.Tensor] = {}

    def share(self, size: int, local: int, device: Any) -> torch.Tensor:
        """This rank's slice of a fresh global subsample of ``range(size)``."""
        order = random_subset(size, local * self.world_size, self.generator)
        start = self.rank * local
        return order[start : start + local].to(device or "cpu")

    def draw(self) -> dict[str, torch.Tensor]:
        """A fresh share of every subsampled plate seen so far, by name."""
        return {name: self.share(*facts) for name, facts in self.plates.items()}

    def wrap(self, fn: Callable) -> Callable:
        """``fn`` (a model or guide) taking its shares as keyword tensors."""

        def run(*args: Any, **kwargs: Any) -> Any:
            mine = [k for k in kwargs if isinstance(k, str) and k.startswith(_PREFIX)]
            given = {k[len(_PREFIX) :]: kwargs.pop(k) for k in mine}
            previous, self.given = self.given, given
            try:
                with split_subsamples(self.world_size), self:
                    return fn(*args, **kwargs)
            finally:
                self.given = previous

        return run

    def _pyro_sample(self, msg: Any) -> None:
        if not site_is_subsample(msg) or msg["value"] is not None or msg["done"]:
            return
        fn = msg["fn"]
        size, local = fn.size, fn.subsample_size
        if local is None or local * self.world_size >= size:
            return  # not subsampled: every rank takes the whole plate
        value = self.given.get(msg["name"])
        if value is None:
            self.plates[msg["name"]] = (size, local, fn.device)
            value = self.share(size, local, fn.device)
        msg["value"] = value


class Ranks:
    """The other ranks of a data-parallel fit, as a trainer's :mod:`.peers`.

    Every rank sets up alike and starts from rank 0's parameters, runs the
    model and guide on its share of each subsampled plate, and averages its
    gradients with the others' in one all-reduce per step.

    Parameters
    ----------
    group : ProcessGroup
        The ranks.
    """

    alone = False

    def __init__(self, group: ProcessGroup):
        self.group = group
        self.share = ShareSubsamples(group.rank, group.world_size, torch.Generator())
        self.ready = False
        self.known: dict[str, torch.Tensor] = {}  # the params of the last reduce
        self._reduced = False

    def wrap(self, fn: Callable) -> Callable:
        """The model or guide taking its shares (see :meth:`inputs`)."""
        return self.share.wrap(fn)

    def describe(self, reason: str) -> str:
        """The engine's reason, prefixed with the ranks."""
        return f"{self.group.describe()}; {reason}"

    def setup(self, parts: Any, args: tuple, kwargs: dict) -> None:
        """Seed alike, create the params (one run of the wrapped guide and
        model of ``parts``), take rank 0's."""
        seed = self.group.shared_seed()
        pyro.set_rng_seed((seed + self.group.rank) % 2**32)
        self.share.generator.manual_seed(seed)
        model, guide = parts.model, parts.guide
        failed: BaseException | None = None
        try:
            with poutine.trace(param_only=True) as capture, torch.no_grad():
                guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
                poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                    *args, **kwargs
                )
        except Exception as exc:  # noqa: BLE001 - told to the peers, then re-raised
            failed = exc
        self.group.agree(0, "the set-up", failed is not None)
        if failed is not None:
            raise failed
        self.group.broadcast_params()
        self.known = {
            name: site["value"].unconstrained()
            for name, site in capture.trace.nodes.items()
        }
        self.ready = True

    def inputs(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """The arguments, with this step's fresh shares added to ``kwargs``."""
        shares = {_PREFIX + n: t for n, t in self.share.draw().items()}
        return args, {**kwargs, **shares}

    def reduce(
        self, number: int, loss: float, params: dict[str, torch.Tensor]
    ) -> float:
        """Average the loss and the gradients of ``params`` over the ranks."""
        self.known = dict(params)
        ordered = [params[name] for name in sorted(params)]
        self._reduced = True
        return self.group.average(number, loss, ordered)

    def guarded(
        self, number: int, parts: Any, args: tuple, kwargs: dict, run: Callable
    ) -> float:
        """Run step ``number`` (set up first); an error before the all-reduce
        is told to the peers in it, so they stop at the same step."""
        if not self.ready:
            self.setup(parts, args, kwargs)
        self._reduced = False
        try:
            return run()
        except (BadStep, DistributedError):
            raise  # decided together, or the group is lost
        except Exception:
            if not self._reduced:
                ordered = [self.known[n] for n in sorted(self.known)]
                with contextlib.suppress(DistributedError):
                    self.group.average(number, 0.0, ordered, failed=True)
            raise
