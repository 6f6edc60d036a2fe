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

from ...core.gaussian_start import Whitening

__all__ = ["ScaleTable", "ScaledAdam", "Travel", "scaled_optim"]

#: A fit has stopped travelling when no window mean moved this many steps.
STOP = 0.05
#: Two windows' moves that add up to less than this share of their lengths
#: are jitter, not travel: the step halves.
CONSISTENT = 0.8
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

    A fit that travels moves its window means the same way window after
    window; one that has arrived only jitters around the optimum, by an
    amount set by the step size, back and forth. So when the last two
    windows' moves do not point the same way (the move over both is below
    :data:`CONSISTENT` of the sum of the two), the step is halved, down to
    :data:`MIN_RATE`: the jitter shrinks until the window means stand still
    (less than :data:`STOP` natural steps), while a journey keeps its pace.
    The fit then ends at the running average of its iterates, which averages
    the last jitter out.

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
        self._sum: dict[str, torch.Tensor] = {}
        self._steps = 0
        self._means: list[dict[str, torch.Tensor]] = []
        self.last = float("inf")

    def _params(self) -> dict[str, torch.Tensor]:
        # the unconstrained tensors the optimizer steps, where natural steps live
        return {
            name: p
            for name, p in pyro.get_param_store().named_parameters()
            if name in self.scales
        }

    def _moves(self, new: dict, old: dict) -> list[torch.Tensor]:
        return [_in_steps(new[n] - old[n], self.scales[n]) for n in new if n in old]

    @torch.no_grad()
    def update(self) -> bool:
        """Add the current parameters; return True once a window's mean moved
        less than :data:`STOP` natural steps (element-wise max) from the
        window before."""
        self._steps += 1
        weight = (AVERAGE_POWER + 1) / (self._steps + AVERAGE_POWER)
        for name, value in self._params().items():
            old = self._average.get(name)
            self._average[name] = (
                value.detach().clone() if old is None else old + weight * (value - old)
            )
            self._sum[name] = self._sum.get(name, 0) + value.detach()
        if self._steps % self.window:
            return False
        means = {n: v / self.window for n, v in self._sum.items()}
        self._sum = {}
        self._means = (self._means + [means])[-3:]
        if len(self._means) < 2:
            return False
        moved = self._moves(self._means[-1], self._means[-2])
        self.last = float(torch.stack([m.abs().max() for m in moved]).max())
        if self.last < STOP:
            return True
        if self.table is not None and len(self._means) == 3:
            first, second = self._moves(self._means[1], self._means[0]), moved
            both = self._moves(self._means[2], self._means[0])
            pieces = _norm(first) + _norm(second)
            if _norm(both) < CONSISTENT * pieces:
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


def _norm(parts: list[torch.Tensor]) -> float:
    return float(torch.cat([p.reshape(-1) for p in parts]).norm())


def _in_steps(delta: torch.Tensor, scale: Any) -> torch.Tensor:
    if isinstance(scale, Whitening):
        return scale.to(delta).whiten(delta)
    return delta / scale.to(delta)
