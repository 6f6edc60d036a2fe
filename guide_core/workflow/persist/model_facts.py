"""The latent sites of a model as a saved guide records them, and the check
that a model given to :func:`guide_core.load` is the model the guide was saved
for.

A site's record is ``{"shape": [...], "event_dim": int, "discrete": bool}``
with every subsampled plate at its full size, so a model run on a different
subsample still matches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ...core.guide import AutoGuide
from ...core.messenger import AutoMessenger
from .guide_file import WrongModelError

__all__ = ["CheckedModel", "differences", "guide_facts", "site_record"]

SiteRecord = dict[str, Any]


def site_record(
    fn: Any, plates: Iterable[tuple[int, int, int]], discrete: bool | None = None
) -> SiteRecord:
    """Return the record of a site with prior ``fn`` in ``plates``.

    Parameters
    ----------
    fn : Distribution
        The site's prior (its batch and event shape give the shape).
    plates : iterable of (dim, size, full_size)
        The vectorized plates the site sits in.
    discrete : bool, optional
        Whether the support is discrete; read from ``fn`` by default.
    """
    shape = list(fn.batch_shape + fn.event_shape)
    batch = len(shape) - fn.event_dim
    for dim, size, full_size in plates:
        index = batch + dim
        if 0 <= index < batch and shape[index] == size:
            shape[index] = full_size
    if discrete is None:
        discrete = bool(fn.support.is_discrete)
    return {"shape": shape, "event_dim": int(fn.event_dim), "discrete": discrete}


def _frames(msg: Mapping[str, Any]) -> list[tuple[int, int, int]]:
    return [
        (f.dim, f.size, f.full_size or f.size)
        for f in msg["cond_indep_stack"]
        if f.vectorized and f.dim is not None
    ]


def _is_latent(msg: Mapping[str, Any]) -> bool:
    return (
        msg["type"] == "sample"
        and not msg["is_observed"]
        and not site_is_subsample(msg)
    )


def guide_facts(guide: Any) -> dict[str, SiteRecord] | None:
    """Return the records of the latent sites a guide has seen, by name.

    ``None`` if it has not run the model yet (and was not loaded from a file,
    whose records it then keeps).
    """
    saved = guide.__dict__.get("_saved_sites")
    if isinstance(guide, AutoGuide):
        prototype = guide._prototype
        if prototype is None:
            return saved
        nodes = prototype.trace.nodes
        return {
            name: site_record(
                site.fn, [(p.dim, p.size, p.full_size) for p in site.plates]
            )
            for name, site in prototype.sites.items()
            if name not in nodes or _is_latent(nodes[name])
        }
    if isinstance(guide, AutoMessenger):
        nodes = getattr(guide, "trace", None)
        nodes = nodes.nodes if nodes is not None else {}
        facts = {
            name: site_record(msg["infer"].get("prior", msg["fn"]), _frames(msg))
            for name, msg in nodes.items()
            if _is_latent(msg)
        }
        return facts or saved
    return saved


class _SiteSpy(Messenger):
    """Notes the record of every latent site the model samples, and the dims
    of its plates among ``free_plates`` (whose sizes may differ)."""

    def __init__(self, free_plates: Iterable[str] = ()) -> None:
        super().__init__()
        self.sites: dict[str, SiteRecord] = {}
        self.free_plates = frozenset(free_plates)
        self.free_dims: dict[str, set[int]] = {}

    def _pyro_sample(self, msg: dict) -> None:
        if _is_latent(msg):
            self.sites[msg["name"]] = site_record(msg["fn"], _frames(msg))
            self.free_dims[msg["name"]] = {
                f.dim for f in msg["cond_indep_stack"] if f.name in self.free_plates
            }


def _shape(record: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(record["shape"])


def _fixed(record: Mapping[str, Any], free: Iterable[int]) -> tuple[int, ...]:
    """The shape without the dims of plates whose size may vary."""
    shape = _shape(record)
    drop = {len(shape) - record["event_dim"] + dim for dim in free}
    return tuple(n for i, n in enumerate(shape) if i not in drop)


def differences(
    saved: Mapping[str, SiteRecord],
    seen: Mapping[str, SiteRecord],
    free_dims: Mapping[str, Iterable[int]] | None = None,
) -> list[str]:
    """Describe how the sites ``seen`` in a model differ from the ``saved`` ones
    (the batch dims ``free_dims`` of a site, amortized plates, may differ)."""
    free_dims = free_dims or {}
    out = []
    missing = [n for n in saved if n not in seen]
    extra = [n for n in seen if n not in saved]
    if missing:
        out.append(f"the model has no latent site {', '.join(map(repr, missing))}")
    if extra:
        out.append(
            f"the model has latent site {', '.join(map(repr, extra))}, which the "
            "saved guide does not know"
        )
    for name in saved:
        free = free_dims.get(name, ())
        if name in seen and (
            saved[name]["event_dim"] != seen[name]["event_dim"]
            or len(_shape(saved[name])) != len(_shape(seen[name]))
            or _fixed(saved[name], free) != _fixed(seen[name], free)
        ):
            out.append(
                f"site {name!r} has shape {_shape(seen[name])} (event dim "
                f"{seen[name]['event_dim']}) in the model but "
                f"{_shape(saved[name])} (event dim {saved[name]['event_dim']}) "
                "in the file"
            )
    return out


class CheckedModel:
    """A model that checks its latent sites against saved records on its
    first run, then runs as the model itself.

    Parameters
    ----------
    model : callable
        The model.
    sites : mapping
        The saved ``{name: record}`` of the latent sites.
    source : str
        Where the records came from (the file), for the error message.
    free_plates : callable, optional
        The names of the plates whose sizes may differ from the saved ones
        (a guide's amortized plates: its parameters do not depend on them).
    """

    def __init__(
        self,
        model: Callable,
        sites: Mapping[str, SiteRecord],
        source: str,
        free_plates: Callable[[], Iterable[str]] = tuple,
    ):
        self.model = model
        self.__wrapped__ = model  # inspect.signature(...) is the model's
        self.sites = dict(sites)
        self.source = source
        self.free_plates = free_plates
        self.pending = True

    def __repr__(self) -> str:
        return f"CheckedModel({self.model!r})"

    def _compare(self, spy: _SiteSpy) -> None:
        problems = differences(self.sites, spy.sites, spy.free_dims)
        if problems:
            raise WrongModelError(
                f"{self.source} holds a guide for another model: "
                + "; ".join(problems)
                + ". Load it with the model (and data shapes) it was trained on."
            )
        self.pending = False

    def check(self, *args: Any, **kwargs: Any) -> None:
        """Run the model once, hidden from every handler, and compare its sites.

        Raises
        ------
        WrongModelError
            A site is missing, new, or has another shape or event dim.
        """
        spy = _SiteSpy(self.free_plates())
        with torch.no_grad():
            poutine.block(spy(self.model))(*args, **kwargs)
        self._compare(spy)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.pending:
            return self.model(*args, **kwargs)
        spy = _SiteSpy(self.free_plates())
        result = spy(self.model)(*args, **kwargs)
        self._compare(spy)
        return result
