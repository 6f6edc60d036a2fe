"""Which plate is local, and whether ``local_model`` matches it: the checks of
:class:`~guide_plugins.dais.AutoSemiDAIS`, each error naming the fix."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from guide_core.plugin import PlateFacts, Prototype

__all__ = [
    "find_local_plate",
    "local_model_sites",
    "local_subsample",
    "make_local_plate",
]


def find_local_plate(prototype: Prototype, name: str | None) -> PlateFacts:
    """The plate of the local latents: ``name``, else the one subsampled plate,
    else the model's only plate.

    Raises
    ------
    ValueError
        No such plate, none at all, or a choice that ``subsample_plate`` must make.
    """
    plates = dict(prototype.plates)
    listed = sorted(plates)
    if name is not None:
        if name not in plates:
            raise ValueError(
                f"subsample_plate={name!r} is not a plate of the model's latent sites; "
                f"its plates are {listed}"
            )
        chosen = plates[name]
    else:
        subsampled = [p for p in plates.values() if p.subsampled]
        candidates = subsampled or list(plates.values())
        if not candidates:
            raise ValueError(
                "AutoSemiDAIS needs a model whose local latents sit in a plate "
                "(e.g. `with pyro.plate('data', N, subsample_size=M):`), but no latent "
                "site of this model is in a plate; use AutoDAIS for such a model"
            )
        if len(candidates) > 1:
            kind = "subsampled plates" if subsampled else "plates and none subsampled"
            raise ValueError(
                f"the model has several {kind}: "
                f"{sorted(p.name for p in candidates)}; pass subsample_plate= to name "
                "the plate of the local latents"
            )
        chosen = candidates[0]
    others = sorted(p.name for p in plates.values() if p.subsampled and p is not chosen)
    if others:
        raise ValueError(
            f"AutoSemiDAIS subsamples one plate, {chosen.name!r}, but the model also "
            f"subsamples {others}; run those at full size"
        )
    return chosen


def local_model_sites(
    local_model: Callable,
    args: tuple,
    kwargs: Mapping[str, Any],
    plate: PlateFacts,
    expected: Sequence[str],
) -> None:
    """Check that ``local_model`` samples exactly the model's local sites, all in
    ``plate``.

    Raises
    ------
    ValueError
        Naming the sites that differ, or a site outside the plate.
    """
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(local_model).get_trace(*args, **kwargs)
    latent = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if not any(f.name == plate.name for f in site["cond_indep_stack"]):
            raise ValueError(
                f"local_model's site {name!r} is not in the plate {plate.name!r}; "
                "every site of local_model must be local to that plate (sample the "
                "global sites in the global model)"
            )
        if not site["is_observed"]:
            latent.append(name)
    if sorted(latent) != sorted(expected):
        raise ValueError(
            f"local_model's latent sites {sorted(latent)} do not match the model's "
            f"latent sites in the plate {plate.name!r}, {sorted(expected)}; "
            "local_model must be the part of the model that samples exactly those"
        )


class _Found(Exception):
    pass


class _PlateSpy(Messenger):
    """Stops a run at the subsample site of one plate, keeping its message."""

    def __init__(self, name: str):
        super().__init__()
        self.name, self.msg = name, None

    def _pyro_sample(self, msg: dict) -> None:
        if site_is_subsample(msg) and msg["name"] == self.name:
            self.msg = msg
            raise _Found


def local_subsample(
    local_model: Callable, args: tuple, kwargs: Mapping[str, Any], plate: PlateFacts
) -> tuple[torch.Tensor | None, int, Any]:
    """How ``local_model`` subsamples the plate in this call: its own
    ``subsample=`` indices (or None), the subsample size and the device.

    The model runs (hidden from outer handlers, drawing nothing) only until it
    opens the plate, so a subsample size that follows the model's arguments is
    followed here too.
    """
    spy = _PlateSpy(plate.name)
    try:
        with torch.no_grad():
            poutine.block(spy(local_model))(*args, **kwargs)
    except _Found:
        pass
    if spy.msg is None:
        raise ValueError(
            f"local_model did not open the plate {plate.name!r} in this call; it "
            "must sample the local sites inside it"
        )
    fn, indices = spy.msg["fn"], spy.msg["value"]
    if indices is not None:
        return indices, len(indices), getattr(fn, "device", None)
    return None, fn.subsample_size or fn.size, getattr(fn, "device", None)


def make_local_plate(
    plate: PlateFacts, indices: torch.Tensor | None, size: int, device: Any
) -> pyro.plate:
    """The guide's copy of the local plate (same indices, or same size)."""
    if indices is not None:
        return pyro.plate(plate.name, plate.full_size, dim=plate.dim, subsample=indices)
    return pyro.plate(
        plate.name, plate.full_size, dim=plate.dim, subsample_size=size, device=device
    )


def summary_chunks(
    indices: torch.Tensor | None, size: int, full_size: int, device: Any
) -> list[torch.Tensor]:
    """The subsamples a summary runs: the model's own indices, else every
    element of the plate in chunks of the model's subsample size (the last
    one wrapping around, to keep the size the local model expects)."""
    if indices is not None:
        return [torch.as_tensor(indices, device=device)]
    return [
        torch.arange(start, start + size, device=device) % full_size
        for start in range(0, full_size, size)
    ]


def check_arguments(
    local_model: Any,
    global_guide: Any,
    local_guide: Any,
    subsample_plate: Any,
    prefix: Any,
    use_global_dais_params: Any,
) -> None:
    """Check AutoSemiDAIS's arguments other than the dynamics'.

    Raises
    ------
    TypeError, ValueError
        Naming the argument and its value.
    """
    if not callable(local_model):
        raise TypeError(
            f"'local_model' must be callable (a Pyro model): {local_model!r}"
        )
    if global_guide is not None and not (
        callable(global_guide) and callable(getattr(global_guide, "model", None))
    ):
        raise TypeError(
            "'global_guide' must be a guide of the global sites with a .model (the "
            f"global model), e.g. AutoNormal(global_model), or None: {global_guide!r}"
        )
    if local_guide is not None and not callable(local_guide):
        raise TypeError(f"'local_guide' must be callable or None: {local_guide!r}")
    for name, value in (("subsample_plate", subsample_plate), ("prefix", prefix)):
        if value is not None and not (isinstance(value, str) and value):
            raise ValueError(f"'{name}' must be a non-empty str or None: {value!r}")
    if not isinstance(use_global_dais_params, bool):
        raise ValueError(
            "'use_global_dais_params' must be True or False: "
            f"{use_global_dais_params!r}"
        )
