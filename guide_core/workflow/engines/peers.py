"""Who else takes each step: the trainer's collaborator between gradients and update.

A step computes its gradients (a recorded program or Pyro's eager step),
hands them to its peers, checks them and updates. In one process there are
no peers (:data:`ALONE`: every hook is the identity); a data-parallel fit has
the other ranks (:class:`~.ranks.Ranks`), which give each step its
share of the subsamples and average the gradients over the ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

__all__ = ["ALONE", "Alone", "Peers"]


class Peers(Protocol):
    """What a trainer asks of the processes that step with it."""

    #: No other process: a finite recorded step needs no second look.
    alone: bool

    def wrap(self, fn: Callable) -> Callable:
        """The model or guide as these peers run it."""

    def inputs(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """This step's model arguments."""

    def guarded(
        self, number: int, parts: Any, args: tuple, kwargs: dict, run: Callable
    ) -> float:
        """Run step ``number`` (``run()``) of the ``parts`` (wrapped model and
        guide) on ``args`` and ``kwargs``; the peers learn of an error in it."""

    def reduce(
        self, number: int, loss: float, params: dict[str, torch.Tensor]
    ) -> float:
        """Combine the gradients of ``params`` (in ``.grad``) with the peers';
        return the loss to report."""

    def describe(self, reason: str) -> str:
        """The engine's reason, as said with these peers."""


class Alone:
    """No peers: this process's gradients and loss, as they are."""

    alone = True

    def wrap(self, fn: Callable) -> Callable:
        """``fn`` itself."""
        return fn

    def inputs(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """The arguments as given."""
        return args, kwargs

    def guarded(
        self, number: int, parts: Any, args: tuple, kwargs: dict, run: Callable
    ) -> float:
        """``run()``."""
        return run()

    def reduce(
        self, number: int, loss: float, params: dict[str, torch.Tensor]
    ) -> float:
        """The loss; the gradients stay as they are."""
        return loss

    def describe(self, reason: str) -> str:
        """The reason itself."""
        return reason


ALONE = Alone()
