"""The checks of :func:`guide_core.fit`'s arguments: a clear error for each.

Each check names the argument and shows a value that works, so a mistyped
call fails before any fitting starts.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.optim
import torch

__all__ = ["check_int", "check_optim", "check_tol"]


def check_int(name: str, value: Any, minimum: int, example: str) -> int:
    """``value`` if it is an int of at least ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"'{name}' must be an int such as {example}: {value!r}")
    if value < minimum:
        raise ValueError(f"'{name}' must be >= {minimum}: {value!r}")
    return value


def check_tol(tol: Any) -> float | None:
    """``tol`` if it is a positive number or None, else raise."""
    if tol is not None and (
        isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0
    ):
        raise ValueError(
            f"'tol' must be a positive float such as 1e-4, or None: {tol!r}"
        )
    return tol


def check_optim(optim: Any) -> pyro.optim.PyroOptim:
    """``optim`` if it is a Pyro optimizer (Adam at 0.01 for None), else raise."""
    if optim is None:
        return pyro.optim.Adam({"lr": 0.01})
    if isinstance(optim, torch.optim.Optimizer) or (
        isinstance(optim, type) and issubclass(optim, torch.optim.Optimizer)
    ):
        torch_name = getattr(optim, "__name__", type(optim).__name__)
        raise TypeError(
            "'optim' must be a Pyro optimizer such as pyro.optim.Adam({'lr': 0.01}), "
            f"not the torch optimizer {torch_name}"
        )
    if not isinstance(optim, pyro.optim.PyroOptim):
        raise TypeError(
            "'optim' must be a Pyro optimizer such as pyro.optim.Adam({'lr': 0.01}): "
            f"{optim!r}"
        )
    return optim
