"""The guide file: its format, its errors, and how values are stored in it.

A guide file is ``torch.save`` of a plain dict that ``torch.load(...,
weights_only=True)`` reads back: tensors, numbers, strings, lists and dicts.
A constructor argument that is not one of those is stored as a tagged dict
(``{"$": "tuple", ...}``, ``{"$": "init", "name": "median", "kwargs": {...}}``
for an init strategy registered under a name), so no pickled object is ever
loaded from a file.
"""

from __future__ import annotations

import functools
import inspect
import os
import pickle
from collections.abc import Iterable, Mapping
from typing import Any

import torch

__all__ = [
    "FORMAT_VERSION",
    "GUIDE_CORE_FORMAT",
    "FormatVersionError",
    "LoadError",
    "SaveError",
    "WrongGuideError",
    "WrongModelError",
    "decode",
    "encode_arguments",
    "read",
    "strategy_names",
    "versions",
]

#: The value of the ``"format"`` entry of every file :func:`save` writes.
GUIDE_CORE_FORMAT = "guide_core.guide"
#: The version of that format this guide_core writes; it reads this and older.
FORMAT_VERSION = 1

_TAG = "$"  # marks an encoded non-primitive value: {"$": kind, ...}
_PRIMITIVE = (type(None), bool, int, float, str)


class SaveError(ValueError):
    """The guide cannot be saved as it is (e.g. an argument is not storable)."""


class LoadError(ValueError):
    """The file cannot be loaded: not a guide file, or damaged."""


class WrongGuideError(LoadError):
    """The file holds another guide than the one the caller expects."""


class WrongModelError(LoadError):
    """The file's guide was trained on a model with other sites or shapes."""


class FormatVersionError(LoadError):
    """The file was written in a newer format than this guide_core reads."""


# -- constructor arguments ------------------------------------------------------


class _Unstorable(Exception):
    pass


def strategy_names() -> dict[int, str]:
    """Return ``{id(strategy): registered name}`` of every named init strategy."""
    from ... import registry

    return {id(s.strategy): name for name, s in registry.init_strategies().items()}


def _encode(value: Any, names: dict[int, str]) -> Any:
    """Encode an argument as tensors and primitives, or raise ``_Unstorable``."""
    if isinstance(value, _PRIMITIVE):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {_TAG: kind, "items": [_encode(v, names) for v in value]}
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {_TAG: "dict", "items": {k: _encode(v, names) for k, v in value.items()}}
    if id(value) in names:
        return {_TAG: "init", "name": names[id(value)], "kwargs": {}}
    if (
        isinstance(value, functools.partial)
        and id(value.func) in names
        and not value.args
    ):
        kwargs = {k: _encode(v, names) for k, v in value.keywords.items()}
        return {_TAG: "init", "name": names[id(value.func)], "kwargs": kwargs}
    raise _Unstorable


def decode(value: Any) -> Any:
    """Return the argument that ``value`` (as read from a file) stores."""
    if not isinstance(value, dict) or _TAG not in value:
        return value
    kind = value[_TAG]
    if kind in ("tuple", "list"):
        items = [decode(v) for v in value["items"]]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {k: decode(v) for k, v in value["items"].items()}
    if kind == "init":
        from ... import registry

        strategy = registry.init_strategy(value["name"])
        kwargs = {k: decode(v) for k, v in value["kwargs"].items()}
        return functools.partial(strategy, **kwargs) if kwargs else strategy
    raise LoadError(f"unknown encoded value kind {kind!r}")


def _named_arguments(guide: Any) -> dict[str, Any]:
    """The arguments the guide was built with after the model, by name."""
    call = guide.__dict__.get("_init_call")
    if call is None:
        raise SaveError(
            f"{type(guide).__name__} does not record its constructor arguments, so "
            "it cannot be saved; subclass AutoGuide or AutoMessenger, whose "
            "subclasses record them"
        )
    args, kwargs = call
    init = inspect.signature(type(guide).__init__)
    bound = init.bind(None, None, *args, **kwargs).arguments
    params = init.parameters
    named: dict[str, Any] = {}
    for key, value in list(bound.items())[2:]:
        kind = params[key].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise SaveError(
                    f"{type(guide).__name__} was given extra positional arguments "
                    f"{value!r}, which cannot be saved by name"
                )
        else:
            named[key] = value
    return named


def encode_arguments(
    guide: Any, who: str, omit: Iterable[str], names: dict[int, str]
) -> tuple[dict[str, Any], list[str]]:
    """Return the guide's stored constructor arguments and the omitted names.

    Raises :class:`SaveError` for an argument that cannot be stored, naming it
    (``who`` says which guide) and showing how to omit it and pass it again.
    """
    stored, omitted = {}, []
    for key, value in _named_arguments(guide).items():
        if key in omit:
            omitted.append(key)
            continue
        try:
            stored[key] = _encode(value, names)
        except _Unstorable:
            raise SaveError(
                f"cannot save {who}: its argument {key}={value!r} is not a tensor, "
                "a plain value or a registered init strategy, so it cannot be "
                f"stored in the file. Save without it, save(guide, path, "
                f"omit=[{key!r}]), and pass it again when loading: "
                f"load(path, model, {key}=...)"
            ) from None
    return stored, omitted


def versions() -> dict[str, str]:
    """Return the versions of guide_core, torch and pyro, as strings."""
    import pyro

    from ... import __version__

    return {
        "guide_core": str(__version__),
        "torch": str(torch.__version__),
        "pyro": str(pyro.__version__),
    }


def read(path: str | os.PathLike, map_location: Any) -> dict[str, Any]:
    """Read a guide file, refusing what is not one or is of a newer format."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln for ln in str(exc).splitlines() if "Unsupported" in ln]
        why = lines[0].strip() if lines else str(exc).splitlines()[0]
        raise LoadError(
            f"{os.fspath(path)} is not a guide_core guide file: it holds objects "
            f"other than tensors and plain values ({why})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != GUIDE_CORE_FORMAT:
        raise LoadError(
            f"{os.fspath(path)} is not a guide_core guide file (no format "
            f"{GUIDE_CORE_FORMAT!r}); if it is a state_dict, load it with "
            "guide.load_state_dict(torch.load(path))"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        from ... import __version__

        by = payload.get("versions", {}).get("guide_core", "?")
        raise FormatVersionError(
            f"{os.fspath(path)} was written in guide file format {version} by "
            f"guide_core {by}; this guide_core ({__version__}) reads format "
            f"{FORMAT_VERSION} and older: upgrade guide_core to load it"
        )
    return payload
