"""Run a computation on a chosen random state, and compare two runs of it.

A recorded tensor program is trusted only once it gives what the code it was
recorded from gives on the *same draws*: both are run from one seed, with the
global random state forked so the caller's stream is left as it was, and
their tensors are compared within a floating-point tolerance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import torch

__all__ = ["first_mismatch", "run_seeded"]

T = TypeVar("T")


def _cuda_devices(tensors: Iterable[torch.Tensor]) -> list[int]:
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


def run_seeded(
    fn: Callable[[], T], seed: int, tensors: Iterable[torch.Tensor] = ()
) -> T:
    """Call ``fn()`` with torch's random state seeded by ``seed``.

    Parameters
    ----------
    fn : callable
        What to run; takes no arguments.
    seed : int
        The seed set before the call.
    tensors : iterable of torch.Tensor
        The tensors the call uses; the random states of their CUDA devices
        are forked and seeded too.

    Returns
    -------
    object
        What ``fn`` returned. The caller's random state is restored after it.
    """
    devices = _cuda_devices(tensors)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return fn()


def first_mismatch(
    expected: Sequence[torch.Tensor | None],
    actual: Sequence[torch.Tensor | None],
    names: Sequence[str],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> str | None:
    """Say where two runs differ, or return None when they agree.

    Parameters
    ----------
    expected, actual : sequence of torch.Tensor or None
        The outputs of the reference run and of the run being checked;
        ``None`` (an unused gradient) must match ``None``.
    names : sequence of str
        What each output is, for the message.
    rtol, atol : float
        The tolerance, as in :func:`torch.allclose`, scaled by the size of
        the expected values.

    Returns
    -------
    str or None
        ``"<name> differs: expected ..., got ..."`` for the first output
        that differs.
    """
    for name, want, got in zip(names, expected, actual):
        if want is None or got is None:
            if want is not got:
                return f"{name} differs: expected {want}, got {got}"
            continue
        want, got = want.detach(), got.detach()
        if want.shape != got.shape:
            return f"{name} differs: shape {tuple(want.shape)} vs {tuple(got.shape)}"
        scale = float(want.abs().max()) if want.numel() else 0.0
        if not torch.allclose(got, want, rtol=rtol, atol=atol * max(1.0, scale)):
            err = float((got - want).abs().max())
            return f"{name} differs by {err:.3g} (largest expected value {scale:.3g})"
    return None
