"""Many single draws through one recorded program, for models that do not vectorize.

A model written for one draw at a time (``x @ coef`` with a vector ``coef``)
cannot be run under a particle plate, so the PSIS k-hat and the posterior
samples of such a model used to trace the guide and the model once per
draw, about as long as a hundred fit steps for 500 draws. The draw is a
fixed tensor program, though: :func:`recorded_draws` captures one draw (the
guide's sample, the model replayed, what ``collect`` takes from the traces)
with the recorded engine's recorder, checks it against an eager draw on the
same random state, and replays it. The draws consume the random stream as
the eager draws do, so they are the same draws.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from ..core.seeded import first_mismatch, run_seeded
from .engines.fastcall import use_bindings
from .engines.program import split_args
from .engines.simplify import simplify

__all__ = ["MIN_DRAWS", "recorded_draws"]

MIN_DRAWS = 50  # fewer draws than this do not pay for the recording
_SEED = 0x5EED


def recorded_draws(
    draw: Callable[[tuple, Mapping[str, Any]], dict[str, torch.Tensor]],
    num_draws: int,
    args: tuple,
    kwargs: Mapping[str, Any],
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

    Returns
    -------
    dict or None
        The draws, or None when the draw cannot be recorded (it reads a
        value, or the program disagrees with an eager draw); the caller then
        draws eagerly.
    """
    if num_draws < MIN_DRAWS:
        return None
    tensors, rebuild = split_args(tuple(args), dict(kwargs))
    keys: list[str] = []

    def one(*flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = draw(*rebuild(flat))
        keys[:] = list(out)
        return tuple(out.values())

    try:
        with torch.no_grad(), pyro.validation_enabled(False):
            graph = run_seeded(lambda: make_fx(one)(*tensors), _SEED, [])
            graph = simplify(graph)
            graph, _ = run_seeded(lambda: use_bindings(graph, tensors), _SEED, [])
            want = run_seeded(lambda: one(*tensors), _SEED, [])
            got = run_seeded(lambda: graph(*tensors), _SEED, [])
    except Exception:  # noqa: BLE001 - anything unrecordable is drawn eagerly
        return None
    if first_mismatch(list(want), list(got), keys) is not None:
        return None
    parts: list[tuple[torch.Tensor, ...]] = []
    with torch.no_grad():
        for _ in range(num_draws):
            parts.append(graph(*tensors))
    return {k: torch.cat([p[i] for p in parts]) for i, k in enumerate(keys)}
