"""Every private Pyro name the engines use, each with its public fallback.

The recorded loss reads the traces an ELBO itself builds (its particles,
vectorization and plate nesting: ``ELBO._get_traces``) and, for
``TraceEnum_ELBO``, its model factors; the one-optimizer update makes each
parameter's optimizer in a ``pyro.optim`` optimizer as Pyro's first step
makes it, without stepping it. Each name is read here and only here. Under
:func:`public_only` (or where a name is gone: another Pyro) the recorded
loss is refused with the reason, so that step runs Pyro's own eager step,
and the optimizers are made by Pyro's own public call: slower, never wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.optim
import torch
from pyro.optim.clipped_adam import ClippedAdam

from ...core.fallbacks import Fallbacks

__all__ = [
    "grad_clip_args",
    "make_optimizers",
    "model_factors",
    "public_only",
    "trace_builder",
]

_switch = Fallbacks()
#: Within a ``with public_only():`` block, every accessor here gives its
#: public fallback.
public_only = _switch.public_only


def trace_builder(elbo: Any) -> Callable | None:
    """``elbo``'s own builder of ``(model_trace, guide_trace)`` pairs,
    called as ``(model, guide, args, kwargs)``; None where it cannot be
    reached (the caller leaves the loss to Pyro)."""
    return getattr(elbo, "_get_traces", None) if _switch.private else None


def model_factors() -> Callable | None:
    """``TraceEnum_ELBO``'s model factors, ``(model_trace, guide_trace) ->
    (costs, log_factors, ..., sum_dims, scale)``; None where they cannot be
    reached (the caller leaves the loss to Pyro)."""
    if not _switch.private:
        return None
    try:
        from pyro.infer.traceenum_elbo import _compute_model_factors
    except ImportError:
        return None
    return _compute_model_factors


def grad_clip_args(optim: pyro.optim.PyroOptim, param: torch.Tensor) -> dict:
    """The ``clip_args`` Pyro applies to ``param`` (empty: none)."""
    get = getattr(optim, "_get_grad_clip_args", None) if _switch.private else None
    if get is not None:
        return dict(get(param) or {})
    clip = optim.pt_clip_args  # public: a dict, or a callable of the param's name
    if callable(clip):
        return dict(clip(pyro.get_param_store().param_name(param)) or {})
    return dict(clip or {})


def make_optimizers(optim: pyro.optim.PyroOptim, params: list[torch.Tensor]) -> None:
    """Give each of ``params`` its optimizer in ``optim`` as Pyro's first step
    does (loading any state waiting from ``set_state``/``load``), but without
    stepping it: a step with no gradient still decays ClippedAdam's rate.

    The fallback is Pyro's own call with the gradients set aside, after
    which ClippedAdam's one decay of its rate is undone (the other
    optimizers leave a parameter without a gradient alone).
    """
    objs = optim.optim_objs
    missing = [p for p in params if p not in objs]
    if not missing:
        return
    parts = [getattr(optim, n, None) for n in ("_get_optim", "_get_grad_clip")]
    waiting = getattr(optim, "_state_waiting_to_be_consumed", None)
    if _switch.private and None not in parts and isinstance(waiting, dict):
        get_optim, get_clip = parts
        for p in missing:
            objs[p] = get_optim(p)
            optim.grad_clip[p] = get_clip(p)
            state = waiting.pop(pyro.get_param_store().param_name(p), None)
            if state is not None:
                objs[p].load_state_dict(state)
        return
    grads = [p.grad for p in missing]
    try:
        for p in missing:
            p.grad = None
        optim(missing)
    finally:
        for p, g in zip(missing, grads):
            p.grad = g
    for p in missing:
        if isinstance(objs[p], ClippedAdam):
            for group in objs[p].param_groups:
                group["lr"] /= group["lrd"]
