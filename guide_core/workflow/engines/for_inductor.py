"""The recorded program as it goes to inductor: large products stay BLAS calls.

Inductor decomposes ``mv`` (and ``addmv``) into a multiply and a sum and
generates the loop itself, fusing into it whatever computes the vector, which
is then recomputed for every row. On a data matrix (the logistic model's
5,000 x 200) that loop ran several times slower than the BLAS product it
replaced. A matrix-matrix product with one column stays a BLAS call on the CPU,
so :func:`blas_products` rewrites each large ``mv`` into one.
"""

from __future__ import annotations

import torch
import torch.fx as fx

__all__ = ["blas_products"]

_MV = {torch.ops.aten.mv.default, torch.mv}  # torch.mv: the generated binding
_ADDMV = {torch.ops.aten.addmv.default, torch.addmv}
_aten = torch.ops.aten


def _numel(node: object) -> int:
    value = getattr(node, "meta", {}).get("val")
    return value.numel() if isinstance(value, torch.Tensor) else 0


def blas_products(gm: fx.GraphModule, min_numel: int = 4096) -> int:
    """Rewrite ``mv``/``addmv`` on matrices of ``min_numel`` entries or more as ``mm``.

    ``mv(A, v)`` becomes ``mm(A, v[:, None])[:, 0]``, ``addmv(b, A, v, beta=,
    alpha=)`` becomes ``addmm(b[:, None], A, v[:, None], beta=, alpha=)[:, 0]``:
    the same values. Smaller products keep inductor's fused loop, cheaper
    than a library call there.

    Returns
    -------
    int
        How many products were rewritten (``gm`` is recompiled if any).
    """
    graph, done = gm.graph, 0
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in _MV and len(node.args) == 2 and not node.kwargs:
            mat, vec = node.args
            bias = None
        elif node.target in _ADDMV and len(node.args) == 3:
            bias, mat, vec = node.args
        else:
            continue
        if _numel(mat) < min_numel:
            continue
        with graph.inserting_before(node):
            col = graph.call_function(_aten.unsqueeze.default, (vec, -1))
            if bias is None:
                prod = graph.call_function(_aten.mm.default, (mat, col))
            else:
                b = graph.call_function(_aten.unsqueeze.default, (bias, -1))
                prod = graph.call_function(
                    _aten.addmm.default, (b, mat, col), dict(node.kwargs)
                )
            out = graph.call_function(_aten.squeeze.dim, (prod, -1))
        out.meta = dict(node.meta)
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        done += 1
    if done:
        gm.recompile()
    return done
