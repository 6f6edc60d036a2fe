"""Every private torch name guide_core uses, each with its public fallback.

The capture layer and the engines reach past torch's public API where it is
slower: the generated bindings of aten ops
(:mod:`guide_core.core.capture.bindings`), Adam's fused kernel called
directly (``workflow/engines/fused_adam.py``), inductor's compile of a
captured graph (``workflow/engines/program.py``), and the generators' state
read outside a tracer (``workflow/engines/repeats.py``). Each is read here
and only here. Under
:func:`public_only`, or where a name is gone (a newer torch), each gives its
public fallback: the step is slower, never wrong or broken.
``tests/workflow/test_private_names.py`` forces the fallbacks and checks the
engines against Pyro's eager step.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from typing import Any

import torch

from .fallbacks import Fallbacks

__all__ = [
    "OP_OVERLOAD",
    "binding_namespaces",
    "compile_graph",
    "fused_adam_kernels",
    "public_only",
    "untraced",
]

#: The class of an aten overload (``torch.ops.aten.add.Tensor``), reached
#: through public names.
OP_OVERLOAD = type(torch.ops.aten.add.Tensor)

_switch = Fallbacks()
#: Within a ``with public_only():`` block, every accessor here gives its
#: public fallback.
public_only = _switch.public_only


def _private(owner: Any, path: str) -> Any:
    """``owner.path`` (dotted), or None where it is gone or turned off."""
    if not _switch.private:
        return None
    for part in path.split("."):
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    return owner


def binding_namespaces() -> tuple[Any, ...]:
    """Where an aten op's generated binding is found by name: torch's
    ``_C`` namespaces, or the public ``torch`` namespace (fewer ops)."""
    spaces = [_private(torch, f"_C.{n}") for n in ("_VariableFunctions", "_nn")]
    spaces += [_private(torch, f"_C.{n}") for n in ("_linalg", "_special")]
    found = tuple(s for s in spaces if s is not None)
    return found or (torch,)


def fused_adam_kernels() -> tuple[Callable, Callable, Callable] | None:
    """``(adam, adamw, foreach_add_)``, the kernels ``Adam(fused=True)``
    calls; None: run ``optimizer.step()``."""
    kernels = tuple(
        _private(torch, n) for n in ("_fused_adam_", "_fused_adamw_", "_foreach_add_")
    )
    return None if any(k is None for k in kernels) else kernels  # type: ignore


def compile_graph(graph: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> Callable:
    """The graph compiled by inductor, random ops on torch's own generator.

    Directly (``torch._inductor.compile``): the graph is already captured and
    its signature is checked by the caller, so ``torch.compile``'s frame
    capture and guards (about 85 us a call) are not needed; the fallback is
    ``torch.compile`` itself.
    """
    options = {"fallback_random": True}
    if _switch.private:
        try:
            direct = importlib.import_module("torch._inductor").compile
        except (ImportError, AttributeError):
            direct = None
        if direct is not None:
            return direct(graph, inputs, options=options)
    return torch.compile(graph, backend="inductor", options=options)


def untraced() -> contextlib.AbstractContextManager:
    """A block in which tensors are made outside any tracing mode (0.03 ms
    to read the generators' state, against 0.8 ms under a tracer); the
    fallback reads it under the tracer."""
    if _switch.private:
        try:
            from torch.utils._python_dispatch import _disable_current_modes
        except ImportError:
            return contextlib.nullcontext()
        return _disable_current_modes()
    return contextlib.nullcontext()
