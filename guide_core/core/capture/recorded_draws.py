"""Many single draws through one recorded program, for models that do not vectorize.

A model written for one draw at a time (``x @ coef`` with a vector ``coef``)
cannot be run under a particle plate, so the PSIS k-hat and the posterior
samples of such a model used to trace the guide and the model once per
draw, about as long as a hundred fit steps for 500 draws. The draw is a
fixed tensor program, though: :func:`recorded_draws` records one draw (the
guide's sample, the model replayed, what ``collect`` takes from the traces)
with the core's capture layer (:func:`guide_core.core.capture.record`:
captured, shortened, checked against an eager draw on the same random
state), and replays it. The draws consume the random stream as the eager
draws do, so they are the same draws.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro
import torch

from . import record, split_args

__all__ = ["MIN_DRAWS", "recorded_draws"]

MIN_DRAWS = 50  # fewer draws than this do not pay for the recording


def recorded_draws(
    draw: Callable[[tuple, Mapping[str, Any]], dict[str, torch.Tensor]],
    num_draws: int,
    args: tuple,
    kwargs: Mapping[str, Any],
    min_draws: int = MIN_DRAWS,
) -> dict[str, torch.Tensor] | None:
    """``num_draws`` calls of ``draw(args, kwargs)``, concatenated on dim 0.

    Parameters
    ----------
    draw : callable
        One draw: returns ``{key: tensor}`` with one draw on dim 0, always
        the same keys and shapes.
    num_draws : int
    args, kwargs :
        The model's arguments.
    min_draws : int
        Fewer draws than this are not recorded (the recording would not pay).

    Returns
    -------
    dict or None
        The draws, or None when they are too few or the draw cannot be
        recorded (it reads a value, or the program disagrees with an eager
        draw); the caller then draws eagerly.
    """
    if num_draws < min_draws:
        return None
    tensors, rebuild = split_args(tuple(args), dict(kwargs))
    keys: list[str] = []

    def one(*flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = draw(*rebuild(flat))
        keys[:] = list(out)
        return tuple(out.values())

    try:
        with torch.no_grad(), pyro.validation_enabled(False):
            program = record(one, tensors, names=keys)
    except Exception:  # noqa: BLE001 - anything unrecordable is drawn eagerly
        return None
    parts: list[tuple[torch.Tensor, ...]] = []
    with torch.no_grad():
        for _ in range(num_draws):
            parts.append(program(*tensors))
    return {k: torch.cat([p[i] for p in parts]) for i, k in enumerate(keys)}
