"""Steps sized in posterior units, and a stop rule on the parameters' travel.

Adam moves every parameter by about ``lr`` per step, whatever its scale, so a
coefficient whose posterior sd is 0.001 jitters hundreds of sds at
``lr=0.01``, and one whose sd is 1,000 needs years to arrive. After a warm
start the guide knows each parameter's natural step (the posterior sd of a
location, the scale itself for a scale), so :class:`ScaledAdam` multiplies
Adam's step by it, element by element: ``lr`` becomes a fraction of a
posterior sd. :class:`Travel` measures how far the parameters move between
windows in those units, so a fit stops only when they have stopped moving.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyro
import pyro.optim
import torch

__all__ = ["ScaleTable", "ScaledAdam", "Travel", "scaled_optim"]


class ScaleTable(dict):
    """``{parameter tensor: natural step}``, keyed by the tensors themselves
    (a tensor hashes by identity), with a short repr so optimizer settings
    that hold it compare and print cheaply."""

    def __repr__(self) -> str:
        return f"ScaleTable({len(self)} params, id {id(self):#x})"


class ScaledAdam(torch.optim.Optimizer):
    """Adam whose step is multiplied element-wise by each parameter's scale.

    Parameters
    ----------
    params : iterable of torch.Tensor
    lr : float
        The step as a fraction of the scale.
    betas, eps :
        As in Adam.
    scales : ScaleTable or None
        The natural step of each parameter's elements, shaped like it; a
        parameter without one (or ``None``) steps as in plain Adam.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        scales: ScaleTable | None = None,
    ):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "scales": scales}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            scales = group["scales"] or {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t, m, v = state["step"], state["m"], state["v"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                direction = (m / (1 - beta1**t)) / (
                    (v / (1 - beta2**t)).sqrt() + group["eps"]
                )
                scale = scales.get(p)
                if scale is not None:
                    direction = direction * scale.to(p)
                p.sub_(group["lr"] * direction)
        return loss


def scaled_optim(
    scales: Mapping[str, torch.Tensor], lr: float = 0.01
) -> pyro.optim.PyroOptim:
    """A Pyro optimizer: :class:`ScaledAdam`, each param's scale found by its
    name in Pyro's param store (the tensors it holds now)."""
    table = ScaleTable()
    for name, tensor in pyro.get_param_store().named_parameters():
        if name in scales:
            table[tensor] = scales[name].detach()
    return pyro.optim.PyroOptim(ScaledAdam, {"lr": lr, "scales": table})


class Travel:
    """How far the parameters move, in their natural steps, window to window.

    Parameters
    ----------
    scales : mapping of str to torch.Tensor
        Param-store name to natural step (as :func:`scaled_optim` takes).
    window : int
        Steps per window.
    """

    def __init__(self, scales: Mapping[str, torch.Tensor], window: int):
        self.scales = dict(scales)
        self.window = window
        self._sum: dict[str, torch.Tensor] = {}
        self._count = 0
        self._previous: dict[str, torch.Tensor] | None = None
        self.last = float("inf")

    def _values(self) -> dict[str, torch.Tensor]:
        store = pyro.get_param_store()
        return {
            name: store.get_param(name).detach().clone()
            for name in self.scales
            if name in store
        }

    def update(self) -> bool:
        """Add the current parameters; return True once a window's mean moved
        less than 0.05 natural steps (element-wise max) from the window before."""
        for name, value in self._values().items():
            self._sum[name] = self._sum.get(name, 0) + value
        self._count += 1
        if self._count < self.window:
            return False
        means = {n: v / self._count for n, v in self._sum.items()}
        self._sum, self._count = {}, 0
        previous, self._previous = self._previous, means
        if previous is None:
            return False
        moved = [
            ((means[n] - previous[n]) / self.scales[n].to(means[n])).abs().max()
            for n in means
            if n in previous
        ]
        self.last = float(torch.stack(moved).max()) if moved else 0.0
        return self.last < 0.05
