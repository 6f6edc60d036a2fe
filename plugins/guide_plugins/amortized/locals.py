"""Which plates hold local latents, and which model argument holds their rows.

So that ``registry.make("auto_amortized_normal", model)`` needs nothing more
than the model, as the other guides: the amortized plates default to every
plate that holds both latent and observed sites, and each plate's encoder
reads the model argument its observed site reads (the argument itself, or
one with as many rows as the plate and the observed value's row shape, for
``obs=y[idx]`` under a subsampled plate).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from guide_core.plugin import Prototype

__all__ = ["find_rows", "local_plates", "observed_sites", "plate_size"]


class _Found(Exception):
    """Stops the model once the plate is seen."""


class _PlateSpy(Messenger):
    def __init__(self, name: str):
        super().__init__()
        self.name, self.size = name, None

    def _pyro_sample(self, msg: dict) -> None:
        for frame in msg["cond_indep_stack"]:
            if frame.name == self.name:
                self.size = frame.size
                raise _Found


def plate_size(
    model: Callable, args: tuple, kwargs: Mapping[str, Any], name: str
) -> int | None:
    """The size of plate ``name`` in a call of ``model`` (its subsample size
    where subsampled): the model runs, hidden, up to the plate's first site,
    on a fork of the random state."""
    spy = _PlateSpy(name)
    with torch.random.fork_rng(), torch.no_grad(), poutine.block():
        with contextlib.suppress(_Found):  # the caller's random stream is kept
            spy(model)(*args, **kwargs)
    return spy.size


def observed_sites(
    model: Callable, args: tuple, kwargs: Mapping[str, Any]
) -> list[dict]:
    """The observed sample sites of one call of ``model`` (hidden, on a fork
    of the random state; a guide's prototype keeps only the latent ones)."""
    with torch.random.fork_rng(), torch.no_grad(), poutine.block():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    return [
        site
        for site in trace.nodes.values()
        if site["type"] == "sample" and site["is_observed"]
    ]


def local_plates(prototype: Prototype, observed: list[dict]) -> tuple[str, ...]:
    """The plates that hold a continuous latent site and an observed site."""
    latent = {p.name for s in prototype.continuous().values() for p in s.plates}
    observed = {
        f.name for site in observed for f in site["cond_indep_stack"] if f.vectorized
    }
    found = tuple(sorted(latent & observed))
    if not found:
        raise ValueError(
            "the model has no plate with both latent and observed sites (local "
            "latents); name the plates to amortize with amortized_plates=..."
        )
    return found


def _arguments(args: tuple, kwargs: Mapping[str, Any]) -> Iterator[tuple[Any, Any]]:
    yield from enumerate(args)
    yield from kwargs.items()


def find_rows(
    prototype: Prototype,
    observed: list[dict],
    plate: str,
    args: tuple,
    kwargs: Mapping[str, Any],
) -> int | str:
    """The position or name of the model argument holding ``plate``'s rows."""
    facts = prototype.plates[plate]
    for site in observed:
        frames = [f for f in site["cond_indep_stack"] if f.name == plate]
        if not frames:
            continue
        value = site["value"]
        axis = value.dim() - site["fn"].event_dim + frames[0].dim
        if axis < 0:
            continue
        row_shape = value.shape[:axis] + value.shape[axis + 1 :]
        for key, arg in _arguments(args, kwargs):
            if arg is value:
                return key
        for key, arg in _arguments(args, kwargs):
            if (
                isinstance(arg, torch.Tensor)
                and arg.dim() >= 1
                and arg.shape[0] == facts.full_size
                and arg.shape[1:] == row_shape
            ):
                return key
    raise ValueError(
        f"cannot tell which model argument holds the rows of amortized plate "
        f"{plate!r}; pass encoder_input= the argument's name or position, or a "
        "callable of the model's arguments"
    )
