"""Save a trained guide to one file and load it back for the same model.

:func:`save` writes, with ``torch.save``, a plain dict of tensors and
primitive values (so :func:`load` reads it with ``weights_only=True``): the
file format and its version, the guide's registry and class name, the
arguments it was built with, its parameters, the facts of the model's latent
sites (names, shapes, event dims) and the versions of guide_core, torch and
pyro. A guide list keeps one such record per part, with the sites the part
guides, so the list is rebuilt without a hand-written ``poutine.block``.

:func:`load` builds the guide again and loads the parameters before its first
call (the core applies them right after the guide's setup), so the loaded
guide's ``median`` is the saved guide's, exactly, with no warm-up call. The
model it is given is checked against the saved site facts at the first run of
the model, or at once when ``model_args`` are given.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from pyro import poutine

from ...core.composite import AutoCallable, AutoGuideList
from ...core.guide import AutoGuide
from ...core.messenger import AutoMessenger
from .guide_file import (
    FORMAT_VERSION,
    GUIDE_CORE_FORMAT,
    FormatVersionError,
    LoadError,
    SaveError,
    WrongGuideError,
    WrongModelError,
    decode,
    encode_arguments,
    read,
    strategy_names,
    versions,
)
from .model_facts import CheckedModel, guide_facts

__all__ = [
    "FORMAT_VERSION",
    "GUIDE_CORE_FORMAT",
    "FormatVersionError",
    "LoadError",
    "SaveError",
    "WrongGuideError",
    "WrongModelError",
    "load",
    "save",
]


# -- one record per guide -------------------------------------------------------


def _registry_name(cls: type) -> str | None:
    from ... import registry

    for spec in registry.default_registry():
        if spec.factory is cls:
            return spec.name
    return getattr(cls, "_guide_core_name", None)


def _record(
    guide: Any, who: str, omit: Iterable[str], names: dict[int, str]
) -> dict[str, Any]:
    if isinstance(guide, AutoCallable):
        raise SaveError(
            f"cannot save {who}: it wraps the plain callable {guide._guide!r}, whose "
            "parameters guide_core cannot rebuild; save them with "
            "torch.save(guide.state_dict(), path) instead"
        )
    if not isinstance(guide, (AutoGuide, AutoMessenger)):
        raise SaveError(
            f"cannot save {guide!r}: save() takes a guide_core guide (an AutoGuide, "
            "AutoMessenger or AutoGuideList)"
        )
    cls = type(guide)
    stored, omitted = encode_arguments(guide, who, omit, names)
    record: dict[str, Any] = {
        "registry_name": _registry_name(cls),
        "class_name": cls.__name__,
        "class_path": f"{cls.__module__}:{cls.__qualname__}",
        "kwargs": stored,
        "omitted": omitted,
        "sites": guide_facts(guide),
        "state": {},
        "parts": None,
    }
    if isinstance(guide, AutoGuideList):
        record["parts"] = [
            _part_record(guide, i, omit, names) for i in range(len(guide))
        ]
    else:
        record["state"] = {k: v.detach() for k, v in guide.state_dict().items()}
    return record


def _part_record(
    guide: AutoGuideList, index: int, omit: Iterable[str], names: dict[int, str]
) -> dict[str, Any]:
    part = guide[index]
    wrapped = isinstance(part, AutoCallable) and isinstance(
        part._guide, (AutoGuide, AutoMessenger)
    )
    inner = part._guide if wrapped else part
    who = f"part {index} ({type(inner).__name__}) of the {type(guide).__name__}"
    record = _record(inner, who, omit, names)
    if record["sites"] is None:
        raise SaveError(
            f"cannot save {who}: it has not been set up, so the sites it guides are "
            "unknown; call the guide (or its median) with the model's arguments "
            "once before saving"
        )
    record["expose"] = list(record["sites"])
    return record


def save(guide: Any, path: str | os.PathLike, *, omit: Iterable[str] = ()) -> None:
    """Save a guide (parameters, constructor arguments, site facts) to one file.

    Parameters
    ----------
    guide : AutoGuide, AutoMessenger or AutoGuideList
        The guide to save, usually trained.
    path : str or path-like
        Where to write the file (``torch.save`` format, loadable with
        ``weights_only=True``).
    omit : iterable of str
        Constructor arguments to leave out of the file, e.g. a custom
        ``create_plates`` function; pass them again to :func:`load`.

    Raises
    ------
    SaveError
        An argument cannot be stored (an arbitrary callable): the message names
        it and shows how to omit it and pass it again when loading.
    """
    omit = tuple([omit] if isinstance(omit, str) else omit)
    names = strategy_names()
    payload = {
        "format": GUIDE_CORE_FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": versions(),
        "guide": _record(guide, type(guide).__name__, omit, names),
    }
    torch.save(payload, path)


# -- loading ----------------------------------------------------------------------


def _describe(record: Mapping[str, Any]) -> str:
    name = record["registry_name"]
    return record["class_name"] + (f" ({name!r})" if name else "")


def _is_a(record: Mapping[str, Any], wanted: str, path: Any) -> bool:
    """Whether the saved guide is ``wanted`` (a registry or class name), also
    as a subclass (``AutoGaussianDense`` is an ``"auto_gaussian"``)."""
    from ... import registry

    if wanted in (record["registry_name"], record["class_name"]):
        return True
    factory = _factory(record, path)
    if isinstance(factory, functools.partial):
        factory = registry.info(record["registry_name"]).factory
    bases = {c.__name__ for c in getattr(factory, "__mro__", ())}
    if wanted in registry.names():
        wanted = registry.info(wanted).class_name
    return wanted in bases


def _check_expected(record: Mapping[str, Any], expect: Any, path: Any) -> None:
    if expect is None:
        return
    wanted = expect.__name__ if isinstance(expect, type) else str(expect)
    if not _is_a(record, wanted, path):
        raise WrongGuideError(
            f"{os.fspath(path)} holds a {_describe(record)} guide, not {wanted!r}; "
            f"load it with expect={record['registry_name'] or record['class_name']!r}"
            " or pick the file of the guide you want"
        )


def _factory(record: Mapping[str, Any], path: Any) -> Callable[..., Any]:
    from ... import registry

    name = record["registry_name"]
    if name and name in registry.names():
        spec = registry.info(name)
        if spec.class_name != record["class_name"]:
            raise WrongGuideError(
                f"{os.fspath(path)} holds a {_describe(record)} guide, but the "
                f"installed {name!r} builds {spec.class_name}; install the plugin "
                "that saved it"
            )
        return functools.partial(registry.make, name)
    module, _, qualname = record["class_path"].partition(":")
    try:
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError) as exc:
        raise LoadError(
            f"{os.fspath(path)} holds a {_describe(record)} guide from "
            f"{record['class_path']}, which is not installed here ({exc}); install "
            "the plugin that provides it ('python -m guide_core list' shows the "
            "installed guides)"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, (AutoGuide, AutoMessenger))):
        raise LoadError(f"{record['class_path']} in {os.fspath(path)} is not a guide")
    return cls


def _kwargs(
    record: Mapping[str, Any], overrides: Mapping[str, Any], top: bool, path: Any
) -> dict[str, Any]:
    kwargs = {k: decode(v) for k, v in record["kwargs"].items()}
    missing = [k for k in record["omitted"] if k not in overrides]
    if missing:
        given = ", ".join(f"{k}=..." for k in missing)
        raise LoadError(
            f"{os.fspath(path)} was saved without the argument(s) {', '.join(missing)} "
            f"of {_describe(record)}: pass them again, load(path, model, {given})"
        )
    kwargs.update({k: overrides[k] for k in record["omitted"]})
    if top:
        kwargs.update(overrides)
    return kwargs


def _build(
    record: Mapping[str, Any],
    model: Callable,
    overrides: Mapping[str, Any],
    top: bool,
    path: Any,
) -> Any:
    factory = _factory(record, path)
    kwargs = _kwargs(record, overrides, top, path)
    if top and record["parts"] is not None:
        # keys that only parts omitted are the parts', not the list's
        for part in record["parts"]:
            for key in part["omitted"]:
                if key not in record["omitted"]:
                    kwargs.pop(key, None)
    guide = factory(model, **kwargs)
    guide.__dict__["_saved_sites"] = record["sites"]  # until it sees the model
    if record["parts"] is None:
        guide.load_state_dict(record["state"])
        return guide
    for part_record in record["parts"]:
        blocked = poutine.block(model, expose=list(part_record["expose"]))
        guide.append(_build(part_record, blocked, overrides, False, path))
    return guide


def load(
    path: str | os.PathLike,
    model: Callable,
    *,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    expect: str | type | None = None,
    map_location: Any = None,
    **guide_kwargs: Any,
) -> Any:
    """Load a guide saved by :func:`save`, ready to use with no warm-up call.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.
    model : callable
        The model the guide was trained on (the same sites and shapes).
    model_args, model_kwargs :
        The model's arguments, if it takes any. When given, the model is
        checked at once and the guide is set up, so ``median()`` then needs no
        arguments; otherwise the check happens at the guide's first call.
    expect : str or type, optional
        The registry name or class the file must hold (e.g. ``"auto_normal"``).
    map_location :
        As for ``torch.load``, e.g. ``"cpu"`` for a guide saved on a GPU.
    **guide_kwargs :
        Constructor arguments that replace the saved ones, or that were left
        out with ``save(..., omit=[...])``.

    Raises
    ------
    LoadError
        Not a guide file, or an omitted argument was not passed again.
    WrongGuideError
        The file holds another guide than ``expect``.
    WrongModelError
        The model's latent sites differ in names or shapes from the saved ones.
    FormatVersionError
        The file was written by a newer guide_core.
    """
    payload = read(path, map_location)
    record = payload["guide"]
    _check_expected(record, expect, path)
    checked = model
    built: list[Any] = []  # the guide, once built: its shared plates may vary
    if record["sites"] is not None:
        checked = CheckedModel(
            model,
            record["sites"],
            os.fspath(path),
            free_plates=lambda: getattr(built[0], "amortized_plates", ()),
        )
    guide = _build(record, checked, guide_kwargs, True, path)
    built.append(guide)
    if model_args or model_kwargs:
        model_kwargs = dict(model_kwargs or {})
        if isinstance(checked, CheckedModel):
            checked.check(*model_args, **model_kwargs)
        if isinstance(guide, AutoGuide):
            guide._ensure_setup(*model_args, **model_kwargs)
            for part in guide.children() if isinstance(guide, AutoGuideList) else ():
                if isinstance(part, AutoGuide) and not isinstance(part, AutoCallable):
                    part._ensure_setup(*model_args, **model_kwargs)
        elif isinstance(guide, AutoMessenger):
            _visit_sites(guide, model_args, model_kwargs)
    return guide


def _visit_sites(guide: AutoMessenger, args: tuple, kwargs: Mapping) -> None:
    """Run a messenger guide once, hidden and on a forked random state, so its
    sites' parameters (and modules) exist and hold the loaded values, and its
    first real call draws as the saved guide's would."""
    with torch.random.fork_rng(), torch.no_grad(), poutine.block():
        guide(*args, **kwargs)
