"""Loading what the command line is given: a model by ``MODULE:FUNCTION`` and data
from ``.npz``, ``.pt`` or ``.csv`` files. Every failure is a :class:`UsageError`
with a one-line message."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pyro import poutine

__all__ = ["UsageError", "check_model", "load_data", "load_model"]


class UsageError(Exception):
    """A mistake in what the user gave the command line (exit status 2)."""


def load_model(spec: str) -> Callable[..., Any]:
    """Import ``MODULE:FUNCTION`` (a dotted module or a ``.py`` file path)."""
    module_name, sep, func_name = spec.rpartition(":")
    if not sep or not module_name or not func_name:
        raise UsageError(
            f"model {spec!r} must look like MODULE:FUNCTION, e.g. my_models:model"
        )
    try:
        if module_name.endswith(".py") or Path(module_name).is_file():
            path = Path(module_name)
            if not path.is_file():
                raise UsageError(f"model file {module_name!r} does not exist")
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[path.stem] = module
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's
        raise UsageError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    model = getattr(module, func_name, None)
    if model is None:
        raise UsageError(f"module {module_name!r} has no function {func_name!r}")
    if not callable(model):
        raise UsageError(f"{spec!r} is a {type(model).__name__}, not a model function")
    return model


def _tensor(value: Any) -> Any:
    """Arrays become tensors of the default float dtype; 0-d arrays, numbers."""
    if not isinstance(value, torch.Tensor):
        import numpy as np

        if not isinstance(value, np.ndarray):
            return value
        if value.shape == ():
            return value.item()
        value = torch.as_tensor(value)
    return value.to(torch.get_default_dtype()) if value.is_floating_point() else value


def load_data(path: str | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return the model's ``(args, kwargs)`` read from a data file.

    ``.npz`` and ``.csv`` (with a header row) give keyword arguments named by
    their arrays or columns; ``.pt`` may hold a dict (keywords), a tuple or
    list (positional) or a single tensor.
    """
    if path is None:
        return (), {}
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"data file {path!r} does not exist")
    suffix = file.suffix.lower()
    try:
        if suffix == ".npz":
            import numpy as np

            with np.load(file) as arrays:
                return (), {k: _tensor(arrays[k]) for k in arrays.files}
        if suffix == ".pt":
            obj = torch.load(file, weights_only=True)
            if isinstance(obj, dict):
                return (), {str(k): _tensor(v) for k, v in obj.items()}
            if isinstance(obj, (tuple, list)):
                return tuple(_tensor(v) for v in obj), {}
            return (_tensor(obj),), {}
        if suffix == ".csv":
            import numpy as np

            table = np.genfromtxt(file, delimiter=",", names=True, dtype=float)
            if table.dtype.names is None:
                raise UsageError(f"data file {path!r} needs a header row of names")
            return (), {n: _tensor(np.atleast_1d(table[n])) for n in table.dtype.names}
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreadable data is the user's
        raise UsageError(
            f"cannot read data file {path!r}: {type(exc).__name__}: {exc}"
        ) from exc
    raise UsageError(f"data file {path!r} must be .npz, .pt or .csv")


def check_model(model: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> None:
    """Run the model once on the data; raise a :class:`UsageError` if it fails or
    has no latent sample site (then it is not a model a guide can fit)."""
    name = getattr(model, "__name__", repr(model))
    try:
        inspect.signature(model).bind(*args, **kwargs)
    except TypeError as exc:
        raise UsageError(f"the data do not match {name}(): {exc}") from None
    except ValueError:
        pass
    try:
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the model failed on these data
        raise UsageError(
            f"{name}() fails on these data: {type(exc).__name__}: {exc}"
        ) from exc
    latent = [
        site
        for site in trace.nodes.values()
        if site["type"] == "sample" and not site["is_observed"]
    ]
    if not latent:
        raise UsageError(f"{name}() samples no latent site: it is not a Pyro model")
