"""Compute a repeated call once while a step is being recorded.

A guide or a distribution often computes the same value twice from the
same tensors: funsor factorises a precision once for the draw and once for
its density, Pyro recomputes a ``scale_tril`` in ``rsample`` and in
``log_prob``. Recording the step keeps both forward calls (and
:func:`guide_core.core.capture.simplify` merges them), but autograd has
already built one backward pass per call: on a 500-dim AutoGaussian two
Cholesky backward passes, each three ``N^3`` products. :class:`ReuseRepeats`, a
:class:`~torch.overrides.TorchFunctionMode` active during the forward pass
of the recorded step, hands the second call the first call's result, so
the gradients of both uses are summed before one backward pass.

The values of the forward pass are those of the step without it, bit for
bit; the gradients agree up to rounding (summed in another order), which
the recorded engine's check against eager allows. A call is reused only if
it read the same tensors at the same versions with equal other arguments,
drew no random numbers and wrote into none of its inputs; :meth:`stale`
says when a result that was handed out twice was written to afterwards
(the two uses would then have shared a write), and the step is recorded
again without this mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ...core.private_torch import untraced

__all__ = ["ReuseRepeats"]

# Properties that are views computed from the tensor alone; other property
# reads (``.grad``, ``.data``) are never reused.
_PURE_PROPERTIES = frozenset(
    getattr(torch.Tensor, name).__get__ for name in ("T", "mT", "H", "mH")
)


# A copy exists to be written to, a detached tensor to get its own
# ``requires_grad`` or hooks: reusing one would share those.
_NEVER = frozenset({"clone", "empty_like", "new_empty", "copy", "detach"})


class _Unkeyable(Exception):
    pass


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def _unchanged(entry: tuple[Any, list[tuple[torch.Tensor, int]]]) -> bool:
    return all(t._version == v for t, v in entry[1])


def _rng_state() -> list[bytes]:
    """Every generator's state: a call that changes one drew random numbers.

    Read as bytes, outside the dispatcher, so a tracer does not see it.
    """
    with untraced():
        states = [torch.get_rng_state()]
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            states += torch.cuda.get_rng_state_all()
        return [s.numpy().tobytes() for s in states]


class ReuseRepeats(TorchFunctionMode):
    """Under this mode a call repeated on the same inputs returns the first result.

    Attributes
    ----------
    reused : int
        How many calls were answered by an earlier result.
    """

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[tuple, Any] = {}
        self._alive: list[Any] = []  # everything a key names by id stays alive
        self._handed: list[tuple[Any, list[tuple[torch.Tensor, int]]]] = []
        self.reused = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if not self._may_reuse(func, name, kwargs):
            return func(*args, **kwargs)
        try:
            key = (func, self._key(args), self._key(kwargs))
            earlier = self._seen.get(key)
        except (_Unkeyable, TypeError):  # TypeError: an unhashable func
            return func(*args, **kwargs)
        if earlier is not None and _unchanged(earlier):
            self.reused += 1
            self._handed.append(earlier)
            return earlier[0]
        inputs = _tensors(list(args) + list(kwargs.values()))
        versions = [t._version for t in inputs]
        rng = _rng_state()
        out = func(*args, **kwargs)
        clean = [t._version for t in inputs] == versions and rng == _rng_state()
        if clean and inputs and _tensors(out):
            self._alive.extend((func, args, kwargs))
            self._seen[key] = (out, [(t, t._version) for t in _tensors(out)])
        return out

    @staticmethod
    def _may_reuse(func: Any, name: str, kwargs: dict) -> bool:
        if name == "__get__":
            return func in _PURE_PROPERTIES
        writes = name.endswith("_") and not name.endswith("__")
        return not (
            writes
            or name in _NEVER
            or name.startswith("__set")
            or "out" in kwargs
            or "generator" in kwargs
        )

    def _key(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return ("t", id(value), value._version)
        if isinstance(value, (list, tuple)):
            return (type(value).__name__, tuple(self._key(v) for v in value))
        if isinstance(value, dict):
            return ("d", tuple((k, self._key(v)) for k, v in value.items()))
        if isinstance(value, float):
            return ("f", repr(value))  # 0.0 and -0.0 hash alike but differ
        if value is None or isinstance(
            value, (bool, int, str, torch.dtype, torch.device, torch.Size)
        ):
            return (type(value).__name__, value)
        if isinstance(value, (torch.memory_format, torch.layout)):
            return ("o", id(value))
        raise _Unkeyable

    def stale(self) -> bool:
        """Whether a result handed to two calls was written to afterwards."""
        return not all(_unchanged(h) for h in self._handed)
