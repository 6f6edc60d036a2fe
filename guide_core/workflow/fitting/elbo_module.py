"""``guide_core.ELBOModule``: the loss as a torch module, on the recorded engine.

Pyro's ``Trace_ELBO()(model, guide)`` is a ``torch.nn.Module`` whose
``forward`` returns the differentiable loss, for loops that own their
optimizer: a plain torch loop, gradient clipping, PyTorch Lightning's
automatic optimization. This is its counterpart: ``forward`` replays the
program recorded for its inputs' signature (as :class:`~.svi.SVI` does), and
returns the loss as a tensor whose backward pass leaves the program's
gradients in the parameters' ``.grad`` (accumulating, as autograd does), so
any torch optimizer and ``loss.backward()`` work unchanged. Where the step
cannot be recorded it is Pyro's ``differentiable_loss``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer.elbo import ELBO

from ..engines.eager import param_leaves
from ..engines.losses import NotRecordable, recordable_loss
from ..engines.trainer import Parts, Trainer
from .svi import CHECKS, open_loop

__all__ = ["ELBOModule"]


class _Replayed(torch.autograd.Function):
    """The program's loss, whose backward pass is the program's gradients."""

    @staticmethod
    def forward(ctx: Any, loss: torch.Tensor, grads: list, *leaves: torch.Tensor):
        ctx.grads = grads
        return loss.clone()

    @staticmethod
    def backward(ctx: Any, out: torch.Tensor):
        return (None, None, *(None if g is None else g * out for g in ctx.grads))


class ELBOModule(torch.nn.Module):
    """The ELBO loss of ``model`` and ``guide`` as a module, like
    ``pyro.infer.elbo.ELBOModule``, replayed from a recorded program.

    Parameters
    ----------
    model, guide : callable
        The model and the guide (modules, such as a ``PyroModule`` and an
        autoguide, become submodules, so ``parameters()`` holds the guide's).
    elbo : pyro.infer.ELBO
        Such as ``Trace_ELBO()``.
    engine : {"auto", "recorded", "eager"}
        ``"recorded"`` replays from the second call where it can;
        ``"auto"`` (the default) after :data:`~.engines.trainer.RECORD_AFTER` calls of
        Pyro's loss (a short loop never pays for a recording); ``"eager"``:
        always Pyro's ``differentiable_loss``.
    check_every : int or None
        Check a replayed loss and gradients against Pyro's every this many
        calls (besides the first replays of each program).

    Attributes
    ----------
    engine, reason : str
        What runs now (``"recorded"`` or ``"eager"``) and why.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        elbo: ELBO,
        *,
        engine: str = "auto",
        check_every: int | None = CHECKS["every"],
    ):
        super().__init__()
        if engine not in ("auto", "recorded", "eager"):
            raise ValueError(
                f"'engine' must be 'auto', 'recorded' or 'eager': {engine!r}"
            )
        self.model, self.guide, self.elbo = model, guide, elbo
        self._calls = itertools.count(1)
        self._trainer: Trainer | None = None
        self.engine, self.reason = "eager", "asked for"
        if engine != "eager":
            try:
                loss_fn = recordable_loss(elbo)
            except NotRecordable as exc:
                self.reason = str(exc)
            else:
                # the caller's optimizer updates: the trainer only records
                parts = Parts(model, guide, elbo.loss_and_grads)
                self._trainer = Trainer(
                    parts,
                    open_loop(engine, check_every, "guide_core.ELBOModule"),
                    loss_fn=loss_fn,
                    known_params=self._known_params,
                    reason=engine,
                )
                self.engine, self.reason = self._trainer.engine, engine

    def _known_params(self) -> Iterator[torch.Tensor]:
        yield from self.parameters()  # module-local params (PyroModule)
        yield from (p for _, p in pyro.get_param_store().named_parameters())

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The loss (a differentiable tensor), as Pyro's ``ELBOModule``."""
        trainer, number = self._trainer, next(self._calls)
        program = None
        if trainer is not None:
            leaves = list(trainer.state.params.values())
            kept = [p.grad for p in leaves]  # accumulated: out of the checks' way
            try:
                for p in leaves:
                    p.grad = None
                program = trainer.program_for(number, args, kwargs)
            finally:
                for p, g in zip(leaves, kept):
                    p.grad = g
            self.engine, self.reason = trainer.engine, trainer.reason
            if program is None:
                self.engine = "eager"
        if program is None:
            return self._eager(trainer, args, kwargs)
        leaves = list(trainer.state.params.values())
        loss, grads = program(leaves, trainer.tensors)
        return _Replayed.apply(loss, grads, *leaves)

    def _eager(
        self, trainer: Trainer | None, args: tuple, kwargs: dict
    ) -> torch.Tensor:
        with poutine.trace(param_only=True) as capture:
            loss = self.elbo.differentiable_loss(
                self.model, self.guide, *args, **kwargs
            )
        if trainer is not None:  # what the program will take
            trainer.note_params(self._leaves(capture.trace))
        return loss

    def _leaves(self, trace: Any) -> dict[str, torch.Tensor]:
        """The unconstrained tensors behind the step's param sites: the
        param store's, or with ``module_local_params`` the modules' own."""
        leaves = param_leaves(trace)
        if None not in leaves.values():
            return leaves
        return {n: p for n, p in self.named_parameters() if p.requires_grad}
