"""Replay a recorded program through torch's Python bindings, not the op registry.

A recorded program calls aten overloads (``torch.ops.aten.add.Tensor``); from
Python each such call goes through the dispatcher's boxed path, about 4 us
on this machine, against under 2 us for the same kernel through its
generated binding (``torch.add``, ``Tensor.expand``). On a small model the
replay is mostly that fixed cost, so :func:`use_bindings` rewrites each pure
call to the binding of the same name, and keeps it only where one run on the
recorded inputs gives the same value, dtype, shape and strides as the
overload. Random draws and in-place writes keep their overloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx

from ..private_torch import OP_OVERLOAD, binding_namespaces
from .passes import impure

__all__ = ["use_bindings"]


def _binding(node: fx.Node) -> tuple[str, Any] | None:
    """The binding to try: ``("call_function", fn)`` or ``("call_method", name)``."""
    target = node.target
    if not isinstance(target, OP_OVERLOAD) or impure(node):
        return None
    name = target.name().split("::", 1)[1].split(".", 1)[0]
    for space in binding_namespaces():
        fn = getattr(space, name, None)
        if fn is not None:
            return "call_function", fn
    first = node.args[0] if node.args else None
    if isinstance(first, fx.Node) and hasattr(torch.Tensor, name):
        return "call_method", name
    return None


def _agrees(want: Any, got: Any) -> bool:
    if isinstance(want, torch.Tensor):
        return (
            isinstance(got, torch.Tensor)
            and want.dtype == got.dtype
            and want.shape == got.shape
            and want.stride() == got.stride()
            and want.device == got.device
            and torch.equal(want, got)
        )
    if isinstance(want, (tuple, list)):
        return (
            isinstance(got, (tuple, list))
            and len(want) == len(got)
            and all(_agrees(w, g) for w, g in zip(want, got))
        )
    return type(want) is type(got) and want == got


def _call(kind: str, fn: Any, args: tuple, kwargs: dict) -> Any:
    if kind == "call_method":
        return getattr(args[0], fn)(*args[1:], **kwargs)
    return fn(*args, **kwargs)


class _Checker(fx.Interpreter):
    """Runs the program once; notes which nodes their binding reproduces."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.agreed: dict[fx.Node, tuple[str, Any]] = {}

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        binding = _binding(n) if n.op == "call_function" else None
        if binding is not None:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            try:
                got = _call(*binding, args, kwargs)
            except Exception:  # noqa: BLE001 - the binding does not take these args
                return value
            if _agrees(value, got):
                self.agreed[n] = binding
        return value


def use_bindings(
    gm: fx.GraphModule, inputs: Sequence[torch.Tensor]
) -> tuple[fx.GraphModule, int]:
    """Rewrite ``gm``'s pure aten calls to torch's bindings where they agree.

    Parameters
    ----------
    gm : torch.fx.GraphModule
        A recorded aten program.
    inputs : sequence of torch.Tensor
        Real inputs to run it on once (the caller forks the random state).

    Returns
    -------
    (torch.fx.GraphModule, int)
        The same module, recompiled, and how many calls were rewritten.
    """
    checker = _Checker(gm)
    with torch.no_grad():
        checker.run(*inputs)
    for node, (kind, fn) in checker.agreed.items():
        node.op, node.target = kind, fn
    gm.recompile()
    return gm, len(checker.agreed)
