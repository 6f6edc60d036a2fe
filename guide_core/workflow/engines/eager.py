"""The eager step: Pyro's own gradients, and the checks every step makes.

:func:`eager_loss_and_grads` runs the ELBO's ``loss_and_grads`` (the guide's
draws, the model's density, the backward pass, all by Pyro);
:func:`check_finite` stops a step whose loss or a gradient is NaN or
infinite before the optimizer updates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import torch
from pyro import poutine

__all__ = [
    "BadStep",
    "all_sums_finite",
    "check_finite",
    "eager_loss_and_grads",
    "param_leaves",
]


class BadStep(Exception):
    """A step's loss or a gradient is not finite; the step was not applied."""

    def __init__(self, step: int, what: str):
        super().__init__(what)
        self.step, self.what = step, what


def all_sums_finite(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Whether every tensor's sum is finite, as a boolean tensor.

    A sum is finite only if every element is (NaN and inf propagate), so a
    True here means all elements are finite, in one pass per tensor; a False
    may also be a sum of finite values that overflowed.
    """
    return torch.stack([t.sum() for t in tensors]).isfinite().all()


def check_finite(
    number: int, loss: float, named_grads: dict[str, torch.Tensor | None]
) -> None:
    """Raise :class:`BadStep` naming the first non-finite loss or gradient."""
    if not math.isfinite(loss):
        raise BadStep(number, f"loss is {loss}")
    grads = [(n, g) for n, g in named_grads.items() if g is not None]
    if not grads or bool(all_sums_finite([g for _, g in grads])):
        return
    bad = [n for n, g in grads if not bool(g.isfinite().all())]
    if bad:  # else a sum of finite values overflowed: the step is fine
        raise BadStep(number, f"the gradient of parameter {bad[0]!r} is not finite")


def param_leaves(trace: Any) -> dict[str, torch.Tensor | None]:
    """Each param site of a ``param_only`` trace with the unconstrained
    tensor behind it in the param store; None for a module-local param
    (``module_local_params``: it has no store entry, its module holds it)."""
    leaves = {}
    for name, site in trace.nodes.items():
        unconstrained = getattr(site["value"], "unconstrained", None)
        leaves[name] = unconstrained() if callable(unconstrained) else None
    return leaves


def eager_loss_and_grads(
    svi: Any, args: tuple, kwargs: dict
) -> tuple[float, dict[str, torch.Tensor]]:
    """Run Pyro's ``loss_and_grads``; return the loss and the params it used.

    ``svi`` is a ``pyro.infer.SVI`` or anything with its ``model``, ``guide``
    and ``loss_and_grads``. The gradients are left in each param's ``.grad``.
    """
    with poutine.trace(param_only=True) as capture:
        loss = svi.loss_and_grads(svi.model, svi.guide, *args, **kwargs)
    leaves = param_leaves(capture.trace)
    return float(loss), {n: p for n, p in leaves.items() if p is not None}


def zero_all_grads(params: dict[str, torch.Tensor]) -> None:
    """Drop the gradients of ``params`` and of every param in the store."""
    for p in params.values():
        p.grad = None
    for _, p in pyro.get_param_store().named_parameters():
        p.grad = None
