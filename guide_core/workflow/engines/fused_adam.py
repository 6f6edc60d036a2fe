"""Adam's fused update without ``Optimizer.step``'s per-call bookkeeping.

``torch.optim.Adam(fused=True).step()`` spends most of its time on a small
model before it reaches the kernel: hooks, the profiler's record, grouping
the tensors by device and dtype, looking up every parameter's state. Once
every state exists, :class:`DirectFusedAdam` keeps those lists and calls
the same kernel (``torch._fused_adam_`` or ``torch._fused_adamw_``, read
through :mod:`guide_core.core.private_torch`) with the same arguments
``step()`` would pass, so the update, and the optimizer's state (``state_dict``,
checkpoints) are exactly those of ``step()``.
"""

from __future__ import annotations

import torch

from ...core.private_torch import fused_adam_kernels

__all__ = ["DirectFusedAdam"]


class _Group:
    def __init__(self, group: dict, state: dict, kernels: tuple):
        self.group = group
        self.params = list(group["params"])
        states = [state[p] for p in self.params]
        self.exp_avgs = [s["exp_avg"] for s in states]
        self.exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        self.max_sqs = [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else []
        self.steps = [s["step"] for s in states]
        decoupled = group.get("decoupled_weight_decay", False)
        adam, adamw, self.add_ = kernels
        self.kernel = adamw if decoupled else adam

    def current(self, group: dict, state: dict) -> bool:
        """Whether this is still the optimizer's group, with its state tensors."""
        return group is self.group and all(
            state.get(p, {}).get("exp_avg") is e
            for p, e in zip(self.params, self.exp_avgs)
        )

    def step(self, grads: list[torch.Tensor]) -> None:
        g = self.group
        beta1, beta2 = g["betas"]
        self.add_(self.steps, 1)
        self.kernel(
            self.params,
            grads,
            self.exp_avgs,
            self.exp_avg_sqs,
            self.max_sqs,
            self.steps,
            amsgrad=g["amsgrad"],
            lr=g["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=g["weight_decay"],
            eps=g["eps"],
            maximize=g["maximize"],
            grad_scale=None,
            found_inf=None,
        )


class DirectFusedAdam:
    """The fused kernel of ``torch.optim.Adam``/``AdamW(fused=True)``, called directly.

    Build it with :meth:`of` after a first ``step()`` (which creates the
    state); :meth:`step` then updates and returns True, or returns False,
    having done nothing, when ``step()`` must run instead (a parameter
    without a gradient, new or reloaded state, changed settings).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, groups: list[_Group]):
        self.optimizer, self.groups = optimizer, groups

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer) -> DirectFusedAdam | None:
        """The direct caller for ``optimizer``, or None where it does not apply."""
        kernels = fused_adam_kernels()
        if kernels is None or not isinstance(optimizer, torch.optim.Adam):
            return None
        groups = []
        for group in optimizer.param_groups:
            params = group["params"]
            if not _plain(group) or any(p not in optimizer.state for p in params):
                return None
            kinds = {(p.device, p.dtype) for p in group["params"]}
            if len(kinds) != 1 or not next(iter(kinds))[1].is_floating_point:
                return None
            groups.append(_Group(group, optimizer.state, kernels))
        return cls(optimizer, groups)

    def step(self) -> bool:
        """Update every param from its ``.grad``; False if ``step()`` must do it."""
        groups, state = self.optimizer.param_groups, self.optimizer.state
        if len(self.groups) != len(groups):
            return False
        batches = []
        for group, now in zip(self.groups, groups):
            grads = [p.grad for p in group.params]
            if any(g is None for g in grads) or not _plain(now):
                return False
            if not group.current(now, state):
                return False
            batches.append(grads)
        for group, grads in zip(self.groups, batches):
            group.step(grads)
        return True


def _plain(group: dict) -> bool:
    return (
        group.get("fused") is True
        and not group.get("capturable", False)
        and not group.get("differentiable", False)
        and all(type(x) in (int, float) for x in (group["lr"], *group["betas"]))
    )
