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
from typing import Any

import pyro
import pyro.optim
import torch

from ..core.gaussian_start import Whitening

__all__ = ["ScaleTable", "ScaledAdam", "Travel", "scaled_optim"]

#: A fit has stopped travelling when no window mean moved this many steps.
STOP = 0.05
#: A window's move must be below this share of the one before, or the step halves.
SHRINK = 0.7
#: The smallest share of the step that halving reaches.
MIN_RATE = 1 / 64
#: Weight of the latest iterate in the running average: (p + 1) / (t + p),
#: so iterates from before the last ~1/(p + 1) of the fit fade out.
AVERAGE_POWER = 3


class ScaleTable(dict):
    """``{parameter tensor: natural step}``, keyed by the tensors themselves
    (a tensor hashes by identity), with a short repr so optimizer settings
    that hold it compare and print cheaply.

    Attributes
    ----------
    rate : float
        A factor on every step, which :class:`Travel` lowers once the
        parameters only jitter around where they arrived.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rate = 1.0

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
        The natural step of each parameter's elements, shaped like it, or a
        :class:`~guide_core.core.gaussian_start.Whitening` of a flat
        location (Adam then runs on its whitened coordinates); a parameter
        without one (or ``None``) steps as in plain Adam.
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
            lr = group["lr"] * getattr(scales, "rate", 1.0)
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
                scale = scales.get(p)
                grad = p.grad
                if isinstance(scale, Whitening):  # Adam on u, loc = loc0 + L u
                    factor = scale.factor.to(p)
                    grad = (factor.T @ grad.reshape(-1)).reshape(p.shape)
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                direction = (m / (1 - beta1**t)) / (
                    (v / (1 - beta2**t)).sqrt() + group["eps"]
                )
                if isinstance(scale, Whitening):
                    direction = (factor @ direction.reshape(-1)).reshape(p.shape)
                elif scale is not None:
                    direction = direction * scale.to(p)
                p.sub_(lr * direction)
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

    A parameter that travels moves its window mean by about the same amount
    window after window; one that has arrived only jitters, by an amount set
    by the step size. So whenever a window's move is not clearly smaller than
    the window before's (by :data:`SHRINK`), the step is halved (down to
    :data:`MIN_RATE`): a long journey slows a little, and the jitter of an
    arrived fit shrinks until the window means stand still.

    Parameters
    ----------
    scales : mapping of str to torch.Tensor
        Param-store name to natural step (as :func:`scaled_optim` takes).
    window : int
        Steps per window.
    table : ScaleTable, optional
        The optimizer's table (:func:`scaled_optim`'s ``scales`` setting),
        whose ``rate`` is halved; without one the steps are left alone.
    """

    def __init__(
        self,
        scales: Mapping[str, torch.Tensor],
        window: int,
        table: ScaleTable | None = None,
    ):
        self.scales = dict(scales)
        self.window = window
        self.table = table
        self._average: dict[str, torch.Tensor] = {}
        self._steps = 0
        self._previous: dict[str, torch.Tensor] | None = None
        self.last = float("inf")

    def _params(self) -> dict[str, torch.Tensor]:
        # the unconstrained tensors the optimizer steps, where natural steps live
        return {
            name: p
            for name, p in pyro.get_param_store().named_parameters()
            if name in self.scales
        }

    @torch.no_grad()
    def update(self) -> bool:
        """Add the current parameters to their running average; return True
        once a window moved that average less than :data:`STOP` natural steps
        (element-wise max)."""
        self._steps += 1
        weight = (AVERAGE_POWER + 1) / (self._steps + AVERAGE_POWER)
        for name, value in self._params().items():
            old = self._average.get(name)
            self._average[name] = (
                value.detach().clone() if old is None else old + weight * (value - old)
            )
        if self._steps % self.window:
            return False
        means = {n: v.clone() for n, v in self._average.items()}
        previous, self._previous = self._previous, means
        if previous is None:
            return False
        moved = [
            _in_steps(means[n] - previous[n], self.scales[n]).abs().max()
            for n in means
            if n in previous
        ]
        before, self.last = self.last, float(torch.stack(moved).max()) if moved else 0.0
        if self.last < STOP:
            return True
        if self.table is not None and self.last > SHRINK * before:
            self.table.rate = max(self.table.rate / 2, MIN_RATE)
        return False

    @torch.no_grad()
    def settle(self) -> None:
        """Write the running average into the parameters: the iterates' jitter
        around the optimum averages out (Polyak-Ruppert averaging)."""
        params = self._params()
        for name, average in self._average.items():
            if name in params:
                params[name].copy_(average)


def _in_steps(delta: torch.Tensor, scale: Any) -> torch.Tensor:
    if isinstance(scale, Whitening):
        return scale.to(delta).whiten(delta)
    return delta / scale.to(delta)
