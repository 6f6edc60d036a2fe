"""Supports that follow the subsample: bounds batched over a subsampled plate.

A site such as ``Uniform(low[idx], high[idx])`` inside ``pyro.plate(...,
subsample_size=k)`` has a support that changes with the indices ``idx``. Its
parameters cover the whole plate and are subsampled by the plate at each step;
its support must follow them. :func:`full_supports` gathers the support over
the whole plate (by running the model over every block of ``k`` indices, once,
at setup) and :func:`support_here` cuts it to the indices of the plate the
guide is in now (the whole of it outside the plate, e.g. in ``median``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.subsample_messenger import SubsampleMessenger
from pyro.poutine.util import site_is_subsample

__all__ = ["MAX_SETUP_RUNS", "full_supports", "model_subsamples", "support_here"]

MAX_SETUP_RUNS = 1000  # model runs allowed to gather one plate's supports


def _tensors(constraint: Any) -> dict[str, torch.Tensor]:
    return {k: v for k, v in vars(constraint).items() if isinstance(v, torch.Tensor)}


def _map_tensors(constraint: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """A copy of ``constraint`` with ``fn`` applied to its tensor parameters,
    through ``independent(...)`` wrappers."""
    new = copy.copy(constraint)
    for key, value in _tensors(constraint).items():
        setattr(new, key, fn(value))
    base = getattr(constraint, "base_constraint", None)
    if base is not None:
        new.base_constraint = _map_tensors(base, fn)
    return new


def _all_tensors(constraint: Any) -> list[torch.Tensor]:
    base = getattr(constraint, "base_constraint", None)
    return list(_tensors(constraint).values()) + (
        _all_tensors(base) if base is not None else []
    )


def _position(t: torch.Tensor, plate_dim: int, event_dim: int) -> int | None:
    """The dim of ``t`` (shaped like a value of the site) along ``plate_dim``,
    or None where ``t`` does not vary along it."""
    pos = t.dim() + plate_dim - event_dim
    return pos if 0 <= pos < t.dim() and t.size(pos) > 1 else None


def _varying_plates(site: Any) -> list[Any]:
    """The subsampled plates of ``site`` along which its support's bounds vary."""
    if site.is_discrete:
        return []
    tensors = _all_tensors(site.support)
    return [
        plate
        for plate in site.plates
        if plate.subsampled
        and any(_position(t, plate.dim, site.event_dim) is not None for t in tensors)
    ]


class _SetIndices(Messenger):
    def __init__(self, name: str, indices: torch.Tensor):
        super().__init__()
        self.name, self.indices = name, indices

    def _pyro_sample(self, msg: dict) -> None:
        if site_is_subsample(msg) and msg["name"] == self.name:
            msg["value"] = self.indices.to(
                getattr(msg["fn"], "device", None) or self.indices.device
            )


def full_supports(
    model: Callable, args: tuple, kwargs: Mapping[str, Any], sites: Mapping[str, Any]
) -> dict[str, Any]:
    """Return ``{site name: (support, initial value) over the whole plate}`` for
    every site whose support's bounds vary along a subsampled plate (usually
    none: then the model is not run at all).

    Raises
    ------
    NotImplementedError
        Such a site in two subsampled plates at once, or a plate that would
        take more than ``MAX_SETUP_RUNS`` runs of the model to cover.
    """
    varying = {name: _varying_plates(site) for name, site in sites.items()}
    varying = {name: plates for name, plates in varying.items() if plates}
    out: dict[str, Any] = {}
    by_plate: dict[Any, list[str]] = {}
    for name, plates in varying.items():
        if len(plates) > 1:
            raise NotImplementedError(
                f"site {name!r} has a support whose bounds change along the "
                f"subsampled plates {', '.join(repr(p.name) for p in plates)}; "
                "guides follow such bounds along one subsampled plate only: "
                "subsample one of them, or sample the site on a fixed support "
                "and move its bounds into the model (low + (high - low) * u)"
            )
        by_plate.setdefault(plates[0], []).append(name)
    for plate, names in by_plate.items():
        runs = -(-plate.full_size // plate.size)
        if runs > MAX_SETUP_RUNS:
            raise NotImplementedError(
                f"site {names[0]!r} has a support whose bounds change with the "
                f"subsample of plate {plate.name!r} ({plate.full_size} elements, "
                f"{plate.size} at a time): gathering them would take {runs} runs "
                f"of the model (at most {MAX_SETUP_RUNS}); use a larger "
                "subsample_size, or sample the site on a fixed support and move "
                "its bounds into the model (low + (high - low) * u)"
            )
        out.update(_gather(model, args, kwargs, plate, {n: sites[n] for n in names}))
    return out


def _gather(
    model: Callable, args: tuple, kwargs: Mapping[str, Any], plate: Any, sites: dict
) -> dict[str, tuple[Any, torch.Tensor]]:
    """Run the model over every block of the plate's indices; stitch the
    supports and the initial values."""
    full: dict[str, list[torch.Tensor]] = {}
    first: dict[str, Any] = {}
    for start in range(0, plate.full_size, plate.size):
        idx = (torch.arange(plate.size) + start) % plate.full_size
        with torch.no_grad(), poutine.block():
            trace = poutine.trace(_SetIndices(plate.name, idx)(model)).get_trace(
                *args, **kwargs
            )
        for name, site in sites.items():
            node = trace.nodes[name]
            first.setdefault(name, node["fn"].support)
            tensors = _all_tensors(node["fn"].support) + [node["value"]]
            if name not in full:
                full[name] = [_full_tensor(t, plate, site) for t in tensors]
                full[name][-1] = _full_tensor(node["value"], plate, site, force=True)
            for target, t in zip(full[name], tensors):
                pos = _position(t, plate.dim, site.event_dim)
                if pos is not None:
                    target.index_copy_(pos, idx.to(t.device), t.detach())
    out = {}
    for name, tensors in full.items():
        parts = iter(tensors[:-1])
        support = _map_tensors(first[name], lambda _, parts=parts: next(parts))
        out[name] = support, tensors[-1]
    return out


def _full_tensor(
    t: torch.Tensor, plate: Any, site: Any, force: bool = False
) -> torch.Tensor:
    pos = _position(t, plate.dim, site.event_dim)
    if pos is None and not force:
        return t.detach().clone()
    pos = t.dim() + plate.dim - site.event_dim if pos is None else pos
    shape = list(t.shape)
    shape[pos] = plate.full_size
    return t.new_zeros(shape)


def _active_indices(name: str) -> torch.Tensor | None:
    for handler in reversed(_PYRO_STACK):
        if isinstance(handler, SubsampleMessenger) and handler.name == name:
            return handler._indices
    return None


def support_here(site: Any, full: Any) -> Any:
    """The part of ``full`` (a site's support over the whole plate) at the
    indices of the enclosing plate; all of it outside that plate."""
    (plate,) = _varying_plates(site)
    indices = _active_indices(plate.name)
    if indices is None:
        return full

    def cut(t: torch.Tensor) -> torch.Tensor:
        pos = _position(t, plate.dim, site.event_dim)
        if pos is None or t.size(pos) != plate.full_size:
            return t
        return t.index_select(pos, indices.to(t.device))

    return _map_tensors(full, cut)


class _FoundSubsamples(Exception):
    pass


class _SubsampleSpy(Messenger):
    def __init__(self, names: frozenset[str]):
        super().__init__()
        self.names, self.found = names, {}

    def _pyro_sample(self, msg: dict) -> None:
        if site_is_subsample(msg) and msg["name"] in self.names:
            self.found[msg["name"]] = msg["value"]
            if len(self.found) == len(self.names):
                raise _FoundSubsamples


def model_subsamples(
    model: Callable, args: tuple, kwargs: Mapping[str, Any], names: frozenset[str]
) -> dict[str, torch.Tensor]:
    """Return the indices the model passes as ``pyro.plate(name, subsample=...)``.

    Runs the model, hidden from every outer handler, only until it has opened
    each plate in ``names``. Guides use this so that an explicit subsample is
    respected rather than replaced by one the guide drew itself.
    """
    spy = _SubsampleSpy(names)
    try:
        with torch.no_grad():
            poutine.block(spy(model))(*args, **kwargs)
    except _FoundSubsamples:
        pass
    return spy.found
