"""What a captured program assumed about its inputs, and how to feed it.

A program captured from a call holds for inputs like that call's: the same
shapes, strides, dtypes and devices of the tensors it takes as inputs, and
the same values of everything else (a Python number, a tensor nested in a
container: those are constants of the program). :func:`signature` writes
that down as one hashable key; :func:`split_args` takes the inputs out of a
call's arguments and puts new ones back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["signature", "split_args"]


def _layout(t: torch.Tensor) -> tuple:
    return (tuple(t.shape), t.stride(), t.dtype, t.device)


def _lifted(value: Any) -> bool:
    """Whether a top-level argument is a Python float made an input."""
    return type(value) is float


def _describe(value: Any, top: bool = True, lift: bool = False) -> Any:
    if top and lift and _lifted(value):
        return ("float",)
    if isinstance(value, torch.Tensor):
        # a top-level tensor is an input of the program; one nested in a
        # container is captured as a constant: known by identity and version
        if top:
            return ("tensor", *_layout(value))
        return ("constant", id(value), value._version)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_describe(v, False) for v in value))
    if isinstance(value, dict):
        items = sorted(value.items())
        return ("dict", tuple((k, _describe(v, False)) for k, v in items))
    try:
        hash(value)
    except TypeError:
        return ("object", id(value))
    return ("value", type(value).__name__, value)


def signature(
    params: Sequence[tuple[str, torch.Tensor]],
    args: tuple,
    kwargs: dict,
    lift: bool = False,
) -> tuple:
    """What a program assumed: shapes, strides, dtypes and devices of the inputs.

    Parameters
    ----------
    params : sequence of (str, torch.Tensor)
        Named tensors the program takes first (for a step, the param
        store's names and unconstrained tensors), known by name, identity
        and layout.
    args, kwargs :
        The call's arguments: top-level tensors (the program's inputs) by
        shape, strides, dtype and device; tensors inside containers
        (captured as constants) by identity; other values by value (by
        identity if they are not hashable).
    lift : bool
        Top-level Python floats are inputs too (any value, one program).

    Returns
    -------
    tuple
        Hashable; a program is replayed only on an equal signature.
    """
    return (
        tuple((n, id(p), *_layout(p)) for n, p in params),
        tuple(_describe(a, True, lift) for a in args),
        tuple((k, _describe(v, True, lift)) for k, v in sorted(kwargs.items())),
    )


def split_args(
    args: tuple, kwargs: dict, lift: bool = False
) -> tuple[list[torch.Tensor], Callable[[Sequence[torch.Tensor]], tuple[tuple, dict]]]:
    """The tensors among the top-level arguments, and how to put them back.

    With ``lift``, top-level Python floats are among them, as 0-d tensors of
    the default dtype (a KL weight that changes every step is then an input
    of one program, not a constant of a new one each step).

    Returns
    -------
    (list of torch.Tensor, callable)
        The inputs, and ``rebuild(values) -> (args, kwargs)`` that puts
        ``values`` where the inputs were.
    """

    def is_input(value: Any) -> bool:
        return isinstance(value, torch.Tensor) or (lift and _lifted(value))

    def as_tensor(value: Any) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value
        return torch.tensor(value, dtype=torch.get_default_dtype())

    slots = [i for i, a in enumerate(args) if is_input(a)]
    keys = [k for k, v in kwargs.items() if is_input(v)]
    tensors = [as_tensor(args[i]) for i in slots] + [as_tensor(kwargs[k]) for k in keys]

    def rebuild(values: Sequence[torch.Tensor]) -> tuple[tuple, dict]:
        new_args, new_kwargs = list(args), dict(kwargs)
        for i, v in zip(slots, values):
            new_args[i] = v
        for k, v in zip(keys, values[len(slots) :]):
            new_kwargs[k] = v
        return tuple(new_args), new_kwargs

    return tensors, rebuild
