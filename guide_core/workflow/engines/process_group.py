"""Data parallelism for :func:`~guide_core.fit`: the process group.

As PyTorch's DDP does: the parameters are broadcast from rank 0 once, the
gradients of each step are averaged with one all-reduce per bucket (one
bucket per dtype; the step's loss rides in the same buffer), and every rank
then takes the same optimizer step, so the parameters stay identical. A loss
or gradient that is not finite on any rank makes the averaged ones not
finite on every rank, so the NaN stop (and, as every rank sees the same
averaged losses, the convergence test) is decided together.

A collective that fails (a peer that exited, was killed or stopped answering
within the timeout) raises :class:`DistributedError`, which names this rank,
the step and the cause; the parameters are as after the last completed step.
A rank whose own step (or set-up) raises tells the others in that step's
all-reduce, and they stop with :class:`PeerFailed`, so the ranks stay in step
(``guide-core compare`` goes on to the next guide on every rank).
Only localhost or what ``torchrun`` set up is used; nothing here listens on
its own.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterable
from typing import Any

import pyro
import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_TIMEOUT",
    "DistributedError",
    "PeerFailed",
    "ProcessGroup",
    "is_main_process",
    "join",
    "launched_by_torchrun",
]

DEFAULT_TIMEOUT = 120.0  # seconds; GUIDE_CORE_DIST_TIMEOUT overrides
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """A collective of a distributed fit failed: a peer was lost or timed out.

    Attributes
    ----------
    rank : int
        The rank that raised it.
    step : int
        The step whose collective failed (0: the set-up); the parameters are
        as after the step before it.
    """

    def __init__(self, message: str, rank: int, step: int):
        super().__init__(message)
        self.rank, self.step = rank, step


class PeerFailed(DistributedError):
    """Another rank's step (or set-up) raised; this rank stops with it.

    The process group is intact: the next fit can run on every rank.

    Attributes
    ----------
    failed : tuple of int
        The ranks whose step raised.
    """

    def __init__(self, message: str, rank: int, step: int, failed: tuple[int, ...]):
        super().__init__(message, rank, step)
        self.failed = failed


def launched_by_torchrun() -> bool:
    """Whether the environment is that of a ``torchrun`` worker of 2+ processes."""
    if not all(os.environ.get(name) for name in _ENV):
        return False
    try:
        return int(os.environ["WORLD_SIZE"]) > 1
    except ValueError:
        return False


def is_main_process() -> bool:
    """Whether this process is rank 0 (or not distributed at all)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    if launched_by_torchrun():
        return os.environ.get("RANK") == "0"
    return True


def _timeout() -> float:
    text = os.environ.get("GUIDE_CORE_DIST_TIMEOUT")
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"GUIDE_CORE_DIST_TIMEOUT must be seconds, such as 60: {text!r}"
        ) from None
    if not value > 0:
        raise ValueError(f"GUIDE_CORE_DIST_TIMEOUT must be positive: {text!r}")
    return value


class ProcessGroup:
    """The ranks of one distributed fit and the collectives it needs.

    Parameters
    ----------
    owned : bool
        Whether :func:`join` created the process group (then :meth:`close`
        destroys it).
    timeout : float
        Seconds a collective may wait for a peer.
    """

    def __init__(self, owned: bool, timeout: float):
        self.owned, self.timeout = owned, timeout
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.reduce_seconds = 0.0  # time spent in the gradient all-reduces

    def describe(self) -> str:
        """A short description, for the engine's reason."""
        backend = dist.get_backend()
        return f"distributed over {self.world_size} processes ({backend})"

    def fail(self, step: int, what: str, exc: BaseException) -> DistributedError:
        """The error to raise when a collective of ``step`` failed."""
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        return DistributedError(
            f"rank {self.rank} of {self.world_size}: {what} failed at step {step} "
            f"(a peer was lost or did not answer within {self.timeout:g} s): "
            f"{type(exc).__name__}: {cause}. The parameters are kept as they "
            f"were after step {max(step - 1, 0)}",
            rank=self.rank,
            step=step,
        )

    def _device(self) -> torch.device:
        return (
            torch.device("cuda")
            if dist.get_backend() == "nccl"
            else torch.device("cpu")
        )

    def shared_seed(self) -> int:
        """A seed drawn on rank 0 and known to every rank."""
        seed = torch.randint(0, 2**62, (1,), dtype=torch.int64)
        seed = seed.to(self._device())
        try:
            dist.broadcast(seed, src=0)
        except Exception as exc:  # noqa: BLE001 - any backend failure is a lost peer
            raise self.fail(0, "broadcasting the seed", exc) from exc
        return int(seed.item())

    def broadcast_params(self) -> None:
        """Give every param in Pyro's param store rank 0's value."""
        store = pyro.get_param_store()
        named = sorted(store.named_parameters(), key=lambda item: item[0])
        names = ",".join(name for name, _ in named)
        try:
            self._check_same(names)
            for _, param in named:
                data = param.data.to(self._device())
                dist.broadcast(data, src=0)
                param.data.copy_(data)
        except DistributedError:
            raise
        except Exception as exc:  # noqa: BLE001 - any backend failure is a lost peer
            raise self.fail(0, "broadcasting the parameters", exc) from exc

    def _check_same(self, names: str) -> None:
        digest = torch.tensor(
            [len(names), sum(ord(c) * (i + 1) for i, c in enumerate(names)) % 2**61],
            dtype=torch.int64,
            device=self._device(),
        )
        highest = digest.clone()
        dist.all_reduce(highest, op=dist.ReduceOp.MAX)
        if not bool((highest == digest).all()):
            raise DistributedError(
                f"rank {self.rank}: the ranks' guides have different parameters "
                f"after set-up (here: {names or 'none'}); every rank must build the "
                "same guide for the same model",
                rank=self.rank,
                step=0,
            )

    def average(
        self,
        step: int,
        loss: float,
        params: Iterable[torch.Tensor],
        failed: bool = False,
    ) -> float:
        """Average ``loss`` and the ``.grad`` of ``params`` over the ranks.

        Each dtype's gradients are flattened into one buffer (a missing
        gradient counts as zeros), all-reduced and unflattened back into
        ``.grad``; the loss, one flag per rank (``failed``: this rank's
        step raised) and one count per param (the ranks that gave it a
        gradient) ride in the first buffer. A param no rank gave a gradient
        keeps ``grad = None``, so the optimizer skips it as in one process.
        Returns the mean loss.

        Raises
        ------
        PeerFailed
            On the other ranks, when a rank's step failed.
        """
        if self.world_size == 1:
            return loss  # the mean over one rank (a collective would only wait)
        params = list(params)
        buckets: dict[torch.dtype, list[torch.Tensor]] = {}
        for p in params:
            buckets.setdefault(p.dtype, []).append(p)
        if not buckets:  # nothing to learn: the loss and flags alone
            buckets[torch.float64] = []
        start = time.perf_counter()
        extra = self.world_size + 1
        head = torch.zeros(extra + len(params), dtype=torch.float64)
        head[0], head[1 + self.rank] = loss, float(failed)
        head[extra:] = torch.tensor([float(p.grad is not None) for p in params])
        mean_loss, flags, used = loss, head[1:extra], head[extra:]
        for index, (dtype, group) in enumerate(
            sorted(buckets.items(), key=lambda item: str(item[0]))
        ):
            device = group[0].device if group else self._device()
            grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in group]
            pieces = [g.reshape(-1) for g in grads]
            if index == 0:
                pieces.append(head.to(dtype=dtype, device=device))
            flat = torch.cat(pieces).to(self._device())
            try:
                dist.all_reduce(flat)
            except Exception as exc:  # noqa: BLE001 - any backend failure is a lost peer
                raise self.fail(step, "the gradient all-reduce", exc) from exc
            flat = flat.to(device)
            offset = 0
            for p in group:
                n = p.numel()
                p.grad = (flat[offset : offset + n] / self.world_size).view_as(p)
                offset += n
            if index == 0:
                mean_loss = float(flat[offset]) / self.world_size
                flags = flat[offset + 1 : offset + extra]
                used = flat[offset + extra :]
        for p, count in zip(params, used.tolist()):
            if count == 0:
                p.grad = None  # no rank used it: skipped by the update, as in one
        self.reduce_seconds += time.perf_counter() - start
        self._raise_if_failed(step, flags, failed)
        return mean_loss

    def agree(self, step: int, what: str, failed: bool) -> None:
        """Tell the other ranks whether ``what`` failed here; raise
        :class:`PeerFailed` if it failed on another rank (and not here)."""
        flags = torch.zeros(self.world_size, dtype=torch.float64)
        flags[self.rank] = float(failed)
        flags = flags.to(self._device())
        try:
            dist.all_reduce(flags)
        except Exception as exc:  # noqa: BLE001 - any backend failure is a lost peer
            raise self.fail(step, what, exc) from exc
        self._raise_if_failed(step, flags, failed)

    def _raise_if_failed(self, step: int, flags: torch.Tensor, failed: bool) -> None:
        ranks = tuple(int(r) for r in torch.nonzero(flags.cpu()).reshape(-1))
        if not ranks or failed:
            return  # a rank whose own step failed re-raises its own error
        which = ", ".join(map(str, ranks))
        raise PeerFailed(
            f"rank {self.rank} of {self.world_size}: rank {which} raised at step "
            f"{step} (its own error says why); this rank stops with it. The "
            f"parameters are kept as they were after step {max(step - 1, 0)}",
            rank=self.rank,
            step=step,
            failed=ranks,
        )

    def close(self) -> None:
        """Destroy the process group if :func:`join` created it (after a failure:
        a finished fit keeps it for the next one, as re-joining races the old
        store)."""
        if self.owned and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001, S110 - closing after a lost peer
                pass


def join(distributed: Any) -> ProcessGroup | None:
    """The process group of a fit, joined if needed, or None when not distributed.

    Parameters
    ----------
    distributed : bool or None
        ``None``: distributed when launched by ``torchrun`` with 2+ processes
        or when the process group is already initialised with 2+ ranks.
        ``True``: distributed (the environment or an initialised group must
        say how). ``False``: not.

    Returns
    -------
    ProcessGroup or None
    """
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"'distributed' must be True, False or None: {distributed!r}")
    if distributed is False or not dist.is_available():
        if distributed:
            raise RuntimeError(
                "distributed=True, but torch.distributed is not available"
            )
        return None
    timeout = _timeout()
    if dist.is_initialized():
        if distributed is None and dist.get_world_size() < 2:
            return None
        return ProcessGroup(owned=False, timeout=timeout)
    if distributed is None and not launched_by_torchrun():
        return None
    missing = [name for name in _ENV if not os.environ.get(name)]
    if missing:
        raise RuntimeError(
            "distributed=True needs torchrun (or the environment variables "
            f"{', '.join(_ENV)}); missing: {', '.join(missing)}"
        )
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    try:
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            init_method="env://",
            timeout=datetime.timedelta(seconds=timeout),
        )
    except Exception as exc:  # noqa: BLE001 - say which rank could not join
        raise DistributedError(
            f"rank {os.environ['RANK']} could not join the process group at "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within "
            f"{timeout:g} s: {type(exc).__name__}: {exc}",
            rank=int(os.environ["RANK"]),
            step=0,
        ) from exc
    return ProcessGroup(owned=True, timeout=timeout)
