"""One torch optimizer over all parameters, with a ``pyro.optim`` optimizer's settings.

``pyro.optim`` keeps one torch optimizer per parameter. For the element-wise
optimizers (Adam, SGD, ...) one optimizer whose parameter groups carry the
same settings is the same computation, done by one fused kernel (Adam,
AdamW) or a few multi-tensor (``foreach``) kernels instead of one call per
tensor. :func:`map_optimizer`
makes it exactly when it is exact, and refuses with a reason otherwise.

The state is the ``pyro.optim`` optimizer's own: each parameter still gets
its per-parameter torch optimizer from it (which loads any state given by
``set_state`` or ``load``), and the one optimizer's state entry for that
parameter is the same dict. So ``get_state``, ``save`` and a resumed run see
exactly the update that ran.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pyro
import pyro.optim
import torch
from pyro.optim.clipped_adam import ClippedAdam
from pyro.optim.lr_scheduler import PyroLRScheduler
from torch.nn.utils import clip_grad_norm_, clip_grad_value_

from .fused_adam import DirectFusedAdam
from .private_pyro import grad_clip_args, make_optimizers
from .scaled_steps import ScaledAdam

__all__ = ["MappedOptimizer", "NotMappable", "map_optimizer"]

# torch optimizers whose update of a parameter reads only that parameter's
# gradient and state: one optimizer with per-parameter groups is exact.
_ELEMENTWISE = (
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.SGD,
    torch.optim.Adagrad,
    torch.optim.RMSprop,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.Adadelta,
    torch.optim.Rprop,
    ScaledAdam,
)
_NO_FOREACH = (ClippedAdam, ScaledAdam)
# Their step changes their settings: ClippedAdam decays its learning rate.
_DECAYS_LR = (ClippedAdam,)
# Their fused kernel is the same update as the per-parameter one, in one call.
_FUSED = (torch.optim.Adam, torch.optim.AdamW)


class NotMappable(RuntimeError):
    """The Pyro optimizer has no exact one-optimizer counterpart (run eager)."""


def _frozen(args: dict) -> tuple:
    # a tensor setting (ScaledAdam's scale) by identity: its repr may elide
    return tuple(
        sorted(
            (k, f"tensor@{id(v)}" if isinstance(v, torch.Tensor) else repr(v))
            for k, v in args.items()
        )
    )


class MappedOptimizer:
    """A torch optimizer over every parameter, grouped by identical settings.

    Parameters
    ----------
    optim : pyro.optim.PyroOptim
        The Pyro optimizer whose constructor, arguments (a dict, or a callable
        called per parameter exactly as Pyro calls it) and ``clip_args`` are
        used.
    """

    def __init__(self, optim: pyro.optim.PyroOptim):
        self.optim = optim
        self.constructor = optim.pt_optim_constructor
        self.torch_optimizer: torch.optim.Optimizer | None = None
        self.clips: dict[torch.Tensor, dict] = {}
        self._known: set[int] = set()
        self._direct: DirectFusedAdam | None = None

    def add(self, params: Iterable[torch.Tensor]) -> None:
        """Give the optimizer the parameters it has not seen yet.

        New parameters start their own groups (fresh settings and state), as a
        new parameter gets a fresh optimizer in ``pyro.optim``.
        """
        new = [p for p in params if id(p) not in self._known]
        if not new:
            return
        own = self._own_optimizers(new)
        groups: dict[tuple, dict] = {}
        for p in new:
            self._known.add(id(p))
            args = _settings(own[p])
            clip = grad_clip_args(self.optim, p)
            if clip:
                self.clips[p] = dict(clip)
            group = groups.setdefault(_frozen(args), {"params": [], **args})
            group["params"].append(p)
        if self.torch_optimizer is None:
            first, *rest = groups.values()
            self.torch_optimizer = self._make([first])
            groups_left = rest
        else:
            groups_left = list(groups.values())
        for group in groups_left:
            self.torch_optimizer.add_param_group(group)
        for p in new:  # one state, seen by both optimizers
            self.torch_optimizer.state[p] = own[p].state[p]
        self._direct = None  # new params: the next step is a full one

    def _own_optimizers(
        self, params: list[torch.Tensor]
    ) -> dict[torch.Tensor, torch.optim.Optimizer]:
        """Each param's torch optimizer in the ``pyro.optim`` optimizer, made
        where missing as Pyro's first step makes it, with any state waiting
        for it from ``set_state``/``load`` (see :func:`.make_optimizers`)."""
        make_optimizers(self.optim, params)
        return {p: self.optim.optim_objs[p] for p in params}

    def _make(self, groups: list[dict]) -> torch.optim.Optimizer:
        """The torch optimizer: fused kernels for Adam, else multi-tensor ones."""
        first = groups[0]
        chosen = any(first.get(k) for k in ("foreach", "fused", "differentiable"))
        if self.constructor in _NO_FOREACH or chosen:
            return self.constructor(groups)
        if self.constructor in _FUSED:
            try:
                return self.constructor(groups, fused=True)
            except (RuntimeError, ValueError):  # a dtype or device without one
                pass
        return self.constructor(groups, foreach=True)

    def step(self, params: Sequence[torch.Tensor]) -> None:
        """Clip (per parameter, as Pyro does) and update ``params`` from ``.grad``."""
        self.add(params)
        if self.torch_optimizer is None:
            return  # no params yet: nothing to update
        for p in params if self.clips else ():
            clip = self.clips.get(p)
            if clip and p.grad is not None:
                if clip.get("clip_norm") is not None:
                    clip_grad_norm_(p, clip["clip_norm"])
                if clip.get("clip_value") is not None:
                    clip_grad_value_(p, clip["clip_value"])
        if self._direct is None or not self._direct.step():
            self.torch_optimizer.step()
            self._direct = DirectFusedAdam.of(self.torch_optimizer)
        if self.constructor in _DECAYS_LR:  # the per-parameter ones show it too
            for group in self.torch_optimizer.param_groups:
                for p in group["params"]:
                    self.optim.optim_objs[p].param_groups[0]["lr"] = group["lr"]
        for group in self.torch_optimizer.param_groups:
            for p in group["params"]:
                p.grad = None


def _settings(optimizer: torch.optim.Optimizer) -> dict:
    """A per-parameter optimizer's settings (as loaded, if state was), less
    the implementation choices it left to torch (``foreach``/``fused`` None)."""
    group = optimizer.param_groups[0]
    return {
        k: v
        for k, v in group.items()
        if k != "params" and not (k in ("foreach", "fused") and v is None)
    }


def map_optimizer(optim: Any) -> MappedOptimizer:
    """Return the one-optimizer counterpart of a ``pyro.optim`` optimizer.

    Parameters
    ----------
    optim : pyro.optim.PyroOptim
        Such as ``pyro.optim.Adam({"lr": 0.01})`` or ``ClippedAdam``.

    Returns
    -------
    MappedOptimizer

    Raises
    ------
    NotMappable
        For learning-rate schedulers and optimizers that are not element-wise
        (or not known to be), each with the reason.
    """
    if isinstance(optim, PyroLRScheduler):
        raise NotMappable(
            "a pyro.optim learning-rate scheduler steps one scheduler per "
            "parameter; it is left to Pyro"
        )
    constructor = getattr(optim, "pt_optim_constructor", None)
    if constructor not in (*_ELEMENTWISE, *_NO_FOREACH):
        name = getattr(constructor, "__name__", repr(constructor))
        raise NotMappable(
            f"the optimizer {name} has no exact one-optimizer counterpart here "
            "(known: Adam, AdamW, SGD, Adagrad, RMSprop, Adamax, NAdam, RAdam, "
            "Adadelta, Rprop, ClippedAdam)"
        )
    return MappedOptimizer(optim)
