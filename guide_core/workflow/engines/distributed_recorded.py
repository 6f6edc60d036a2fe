"""The distributed recorded and compiled engines.

The recorded step of :mod:`.recorded`, on each rank's share: before every
step the shares are drawn (:meth:`~.distributed.Ranks.inputs`) and become
inputs of the program, so they are fresh each step and the recorded program
is checked against eager on the same indices; the program's loss and
gradients then go through the ranks' one all-reduce (the trainer's
``reduce_grads`` hook) before the optimizer's update.

``"auto"`` records but does not compile on its own: whether compiling pays
off is timed on each rank, and the ranks could decide differently (one then
waits for the other's compile). Ask for ``"compiled"`` to compile.
"""

from __future__ import annotations

from pyro.infer import SVI

from ..distributed import ProcessGroup
from .distributed import Ranks, RanksReason
from .losses import LossFn
from .optim import MappedOptimizer
from .recorded import RecordedTrainer

__all__ = ["DistributedRecordedTrainer"]


class DistributedRecordedTrainer(RanksReason, RecordedTrainer):
    """A recorded (or compiled) step on each rank's share, averaged before the update.

    Parameters
    ----------
    svi : pyro.infer.SVI
        The model, guide and ELBO.
    args, kwargs :
        The model's arguments.
    group : ProcessGroup
        The ranks.
    loss_fn, optimizer, mode, steps, check_every :
        As for :class:`~.recorded.RecordedTrainer` (``"auto"`` records).
    """

    def __init__(
        self,
        svi: SVI,
        args: tuple,
        kwargs: dict,
        group: ProcessGroup,
        *,
        loss_fn: LossFn,
        optimizer: MappedOptimizer,
        mode: str,
        steps: int,
        check_every: int | None = None,
    ):
        self.ranks = Ranks(svi, group)
        super().__init__(
            self.ranks.svi,
            args,
            kwargs,
            loss_fn=loss_fn,
            optimizer=optimizer,
            mode="recorded" if mode == "auto" else mode,
            steps=steps,
            check_every=check_every,
        )
        if mode == "auto":
            self.reason = "auto: recordable (not compiled on its own when distributed)"
        self.user_args, self.user_kwargs = args, kwargs
        self.reduce_grads = self.ranks.reduce

    def set_inputs(self, args: tuple, kwargs: dict) -> None:
        """Use new model arguments from the next step."""
        self.user_args, self.user_kwargs = args, kwargs
        super().set_inputs(args, kwargs)

    def step(self, number: int) -> float:
        """Run step ``number`` on this rank's fresh share; return the mean loss."""
        args, kwargs = self.user_args, self.user_kwargs

        def run() -> float:
            super(DistributedRecordedTrainer, self).set_inputs(
                args, self.ranks.inputs(kwargs)
            )
            return super(DistributedRecordedTrainer, self).step(number)

        return self.ranks.guarded(number, args, kwargs, run)
