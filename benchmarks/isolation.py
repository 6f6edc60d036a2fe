"""Give each guide under test its own Pyro param store and its own RNG stream.

Pyro keeps parameters in one process-wide ``ParamStoreDict``. Pyro's own modules
hold a reference to that very object (``pyro.poutine.runtime._PYRO_PARAM_STORE``),
so it cannot be replaced; and our guides deliberately use the same parameter
names as Pyro's (``AutoNormal.locs.x``), so two guides sharing it would train
each other's parameters.

A :class:`Slot` therefore swaps the *contents* of the global store: the three
dicts it is made of (name -> unconstrained tensor, tensor -> name, name ->
constraint). Entering a slot installs its dicts and leaves the caller's aside;
leaving it puts the caller's back. The tensors themselves are never copied, so
their identities survive a swap, which matters because ``pyro.optim`` keys each
parameter's optimizer state by tensor object, and ``PyroModule`` compares the
tensor it holds with the store's by identity. A swap costs a few attribute
assignments and always happens outside the timed region.

A slot also carries a torch RNG state, saved on leaving and restored on entering,
so two guides seeded alike draw the same random numbers however their steps are
interleaved: each sees the stream it would have seen running alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyro
import torch

__all__ = ["Slot"]

_STORE_FIELDS = ("_params", "_param_to_name", "_constraints")


def _get_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: dict[str, Any]) -> None:
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seeded_rng(seed: int) -> dict[str, Any]:
    """Return the RNG state that ``torch.manual_seed(seed)`` would produce."""
    saved = _get_rng()
    try:
        torch.manual_seed(seed)
        return _get_rng()
    finally:
        _set_rng(saved)


class Slot:
    """A private param store and RNG stream that can be swapped in and out.

    Parameters
    ----------
    seed : int
        Seed of the slot's torch RNG stream. A fresh slot's param store is empty,
        as after ``pyro.clear_param_store()``.

    Examples
    --------
    >>> ours, theirs = Slot(seed=0), Slot(seed=0)
    >>> with ours.active():
    ...     pass  # pyro.param / SVI steps here only see ``ours``' parameters
    """

    def __init__(self, seed: int = 0) -> None:
        self._store: dict[str, dict[Any, Any]] = {f: {} for f in _STORE_FIELDS}
        self._rng = _seeded_rng(seed)
        self._depth = 0

    @property
    def param_names(self) -> list[str]:
        """Names of the parameters this slot holds (while not active)."""
        return list(self._store["_params"])

    @contextmanager
    def active(self) -> Iterator[Slot]:
        """Install this slot's params and RNG; restore the caller's on exit."""
        if self._depth:
            raise RuntimeError("a Slot cannot be entered twice at the same time")
        store = pyro.get_param_store()
        outer_store = {f: getattr(store, f) for f in _STORE_FIELDS}
        outer_rng = _get_rng()
        for f in _STORE_FIELDS:
            setattr(store, f, self._store[f])
        _set_rng(self._rng)
        self._depth = 1
        try:
            yield self
        finally:
            self._depth = 0
            # Re-read the dicts: ParamStoreDict.clear() rebinds rather than empties.
            self._store = {f: getattr(store, f) for f in _STORE_FIELDS}
            self._rng = _get_rng()
            for f in _STORE_FIELDS:
                setattr(store, f, outer_store[f])
            _set_rng(outer_rng)
