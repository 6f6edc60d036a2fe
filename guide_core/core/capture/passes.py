"""Make a recorded step program shorter without changing what it computes.

A step captured by ``make_fx`` is a straight list of aten calls, and on a
small model most of the replay time is the fixed cost of each call, not the
arithmetic. Pyro's distributions and the backward pass leave many calls that
need not run every step: values that depend only on constants (a prior's
``log(scale)``), tensors that depend only on a shape (``zeros_like``),
arithmetic identities (``x * 1``), repeated subexpressions, and results
nobody reads. :func:`simplify` removes them, bit for bit: every value the
program returns is computed by the same aten operations on the same inputs
as before, and the random draws are kept in their order, so a replay draws
exactly what the recorded step drew.

Where torch has the pass, it is used: dead code goes by
:meth:`torch.fx.Graph.eliminate_dead_code` (same programs as the loop it
replaced, on every model measured). Two of torch's passes are not used,
measured on the SVI steps of ``benchmarks/models.py`` (quick sizes; AutoNormal
and AutoMultivariateNormal; 302 -> 216 calls for ``tiny``/AutoNormal here):

- ``torch.fx.passes.dialect.common.cse_pass.CSEPass`` knows purity only by a
  list of op packets and not which values are written in place later: it
  merges two ``empty`` buffers that two ``normal_`` calls then fill (one draw
  where there were two), and its programs differed bit for bit from the
  captured ones on 2 of the 10 steps. It merged at most one call more.
- ``torch.fx.experimental.const_fold.split_const_subgraphs`` folds calls on
  constants only (9 to 23 calls a step against our 24 to 60, which also fold
  calls that depend on a shape only, such as ``zeros_like``), folds buffers
  that are written in place later, and splits the program into submodules.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx

from ..private_torch import OP_OVERLOAD

__all__ = ["impure", "simplify"]

aten = torch.ops.aten

# Results that depend only on the metadata (shape, dtype, device) of their
# tensor inputs, fixed for one program's signature.
_SHAPE_ONLY = {
    aten.zeros_like.default,
    aten.ones_like.default,
    aten.full_like.default,
    aten.new_zeros.default,
    aten.new_ones.default,
    aten.new_full.default,
}
# Calls that return their first argument's value unchanged when the second
# argument is this scalar (only where the result's dtype and shape are also
# the argument's, checked from the recorded metadata). ``x + 0.0`` is not one
# of them: it turns -0.0 into 0.0.
_IDENTITY_SCALAR = {
    aten.mul.Tensor: 1,
    aten.mul.Scalar: 1,
    aten.div.Tensor: 1,
    aten.div.Scalar: 1,
    aten.sub.Tensor: 0,
    aten.sub.Scalar: 0,
    aten.pow.Tensor_Scalar: 1,
}
# Views and copies that are the argument itself when the shape, dtype and
# device do not change (nothing in a recorded program writes through them).
_SAME_META = {
    aten.expand.default,
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
    aten.alias.default,
    aten._to_copy.default,
    aten.clone.default,
    aten.lift_fresh_copy.default,
}


def impure(node: fx.Node) -> bool:
    """Whether ``node`` draws randomness, writes in place or is not an aten call."""
    target = node.target
    if node.op != "call_function":
        return node.op in ("placeholder", "output")
    if not isinstance(target, OP_OVERLOAD):
        return target is not operator.getitem
    if target._schema.is_mutable:
        return True
    return torch.Tag.nondeterministic_seeded in target.tags


def _meta(node: Any) -> tuple | None:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    if not isinstance(val, torch.Tensor):
        return None
    return (tuple(val.shape), val.dtype, val.device)


def _layout(node: Any) -> tuple | None:
    """Shape, dtype, device and strides: what a later view depends on."""
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    if not isinstance(val, torch.Tensor):
        return None
    return (*_meta(node), tuple(val.stride()))


def _mutated(graph: fx.Graph) -> set[fx.Node]:
    """Nodes whose value some in-place call writes (those are left alone)."""
    out = set()
    for node in graph.nodes:
        target = node.target
        if node.op == "call_function" and isinstance(target, OP_OVERLOAD):
            schema = target._schema
            for arg, value in zip(schema.arguments, node.args):
                if arg.alias_info is not None and arg.alias_info.is_write:
                    if isinstance(value, fx.Node):
                        out.add(value)
    return out


def _is_identity(node: fx.Node, mutated: set[fx.Node]) -> bool:
    if node.op != "call_function" or not node.args:
        return False
    first = node.args[0]
    if not isinstance(first, fx.Node) or first in mutated or node in mutated:
        return False
    if _layout(node) is None or _layout(node) != _layout(first):
        return False
    target = node.target
    if target in _SAME_META:
        kwargs = dict(node.kwargs)
        kwargs.pop("dtype", None), kwargs.pop("memory_format", None)
        return not kwargs or target is not aten._to_copy.default
    if target in _IDENTITY_SCALAR and len(node.args) == 2 and not node.kwargs:
        scalar = node.args[1]
        return type(scalar) in (int, float) and scalar == _IDENTITY_SCALAR[target]
    return False


def _forward_identities(graph: fx.Graph) -> None:
    mutated = _mutated(graph)
    for node in list(graph.nodes):
        if _is_identity(node, mutated):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)


def _frozen(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_frozen(v) for v in value))
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    hash(value)
    return value


def _cse(graph: fx.Graph) -> None:
    mutated = _mutated(graph)
    seen: dict[tuple, fx.Node] = {}
    for node in list(graph.nodes):
        if node.op != "call_function" or impure(node) or node in mutated:
            continue
        try:
            key = (node.target, _frozen(node.args), _frozen(node.kwargs))
        except TypeError:
            continue
        if key in seen:
            node.replace_all_uses_with(seen[key])
            graph.erase_node(node)
        else:
            seen[key] = node


def _fold_constants(gm: fx.GraphModule) -> None:
    """Compute once the calls whose inputs are constants or shapes only."""
    graph = gm.graph
    mutated = _mutated(graph)
    outputs = set(next(n for n in graph.nodes if n.op == "output").all_input_nodes)
    env: dict[fx.Node, Any] = {}
    for node in graph.nodes:
        if node.op == "get_attr" and node not in mutated:
            env[node] = getattr(gm, node.target)
            continue
        if node.op != "call_function" or impure(node) or node in mutated:
            continue
        inputs = node.all_input_nodes
        if node.target in _SHAPE_ONLY:
            if not all(_meta(n) is not None or n in env for n in inputs):
                continue
            args = fx.node.map_arg(node.args, lambda n: env.get(n, _meta_tensor(n)))
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env.get(n))
        elif all(n in env for n in inputs):
            args = fx.node.map_arg(node.args, env.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
        else:
            continue
        value = node.target(*args, **kwargs)
        if not isinstance(value, torch.Tensor):
            continue
        env[node] = value
    count = 0
    for node, value in env.items():
        if node.op == "get_attr" or node in outputs:
            continue  # an output is returned fresh: callers may write to it
        if not any(user not in env for user in node.users):
            continue  # only constants read it: they are folded too
        name = f"_folded_{count}"
        count += 1
        gm.register_buffer(name, value)
        with graph.inserting_before(node):
            const = graph.get_attr(name)
        const.meta = dict(node.meta)
        node.replace_all_uses_with(const, lambda user: user not in env)


def _meta_tensor(node: fx.Node) -> torch.Tensor:
    shape, dtype, device = _meta(node)
    return torch.empty(shape, dtype=dtype, device=device)


def _is_view(node: fx.Node) -> bool:
    target = node.target
    return (
        node.op == "call_function"
        and isinstance(target, OP_OVERLOAD)
        and any(r.alias_info is not None for r in target._schema.returns)
        and bool(node.args)
        and isinstance(node.args[0], fx.Node)
    )


def _fresh_outputs(graph: fx.Graph) -> None:
    """Return a copy where an output would alias a constant, an input or a view.

    The caller owns what the program returns (an optimizer may clip a
    gradient in place), so no output may share memory with a buffer of the
    program or with an input.
    """
    output = next(n for n in graph.nodes if n.op == "output")
    for node in output.all_input_nodes:
        root = node
        while _is_view(root):
            root = root.args[0]
        if root.op in ("get_attr", "placeholder"):
            with graph.inserting_before(output):
                copy = graph.call_function(aten.clone.default, (node,))
            copy.meta = dict(node.meta)
            output.replace_input_with(node, copy)


def _eliminate_dead_code(graph: fx.Graph) -> None:
    # torch's pass, with our test of purity: its own (``Node.is_impure``)
    # agrees on aten programs, but drops random calls inside a torch.compile
    # tracing context unless inductor's ``fallback_random`` is set
    graph.eliminate_dead_code(impure)


def simplify(gm: fx.GraphModule, merge: bool = True) -> fx.GraphModule:
    """Shorten a recorded aten program in place; return it.

    Parameters
    ----------
    gm : torch.fx.GraphModule
        A program from ``make_fx`` whose nodes carry their recorded values'
        metadata (``node.meta["val"]``).
    merge : bool
        Merge repeated pure calls. Off for a forward program that autograd
        will differentiate: two uses of one call would sum their gradients
        before its backward pass, not after two, and round otherwise.

    Returns
    -------
    torch.fx.GraphModule
        The same module, recompiled: identities forwarded, repeated pure
        calls merged, constant and shape-only calls computed once into
        buffers, unread pure calls dropped. Random draws and in-place
        writes stay, in order.
    """
    graph = gm.graph
    _forward_identities(graph)
    if merge:
        _cse(graph)
    _fold_constants(gm)
    _eliminate_dead_code(graph)
    if merge:
        _cse(graph)
        _eliminate_dead_code(graph)
    _fresh_outputs(graph)
    for name, _ in list(gm.named_buffers()):
        if not any(n.op == "get_attr" and n.target == name for n in graph.nodes):
            delattr(gm, name)
    graph.lint()
    gm.recompile()
    return gm
