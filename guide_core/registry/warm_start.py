"""Warm starts: ``registry.make(name, model, init_from=trained_guide)``.

A trained guide's median (or a ``{site: value}`` dict) becomes the new guide's
``init_loc_fn``, falling back to the strategy given or to the guide's default
for sites the values lack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from ..core.initialization import init_to_value
from .checks import accepts, default_init
from .errors import UnexpectedKeywordError
from .spec import GuideSpec

if TYPE_CHECKING:
    from .manager import Registry

__all__ = ["trained_values", "warm_init", "warm_start"]


def trained_values(init_from: Any) -> dict[str, torch.Tensor]:
    """Return the values to start from: a trained guide's median, or a dict."""
    if isinstance(init_from, Mapping):
        return {k: torch.as_tensor(v).detach().clone() for k, v in init_from.items()}
    median = getattr(init_from, "median", None)
    if not callable(median):
        raise TypeError(
            "init_from must be a trained guide (with a median) or a {site: value} "
            f"dict, not {init_from!r}"
        )
    who = type(init_from).__name__
    try:
        values = median()
    except NotImplementedError as exc:
        raise ValueError(
            f"init_from: the trained {who} has no median ({exc}); pass the values "
            "to start from as a dict: init_from={'site': value, ...}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - re-raised with the fix
        raise ValueError(
            f"init_from: the median of the trained {who} needs the model's "
            f"arguments ({type(exc).__name__}: {exc}); pass the median itself: "
            "init_from=trained_guide.median(*args, **kwargs)"
        ) from exc
    return {k: v.detach().clone() for k, v in values.items()}


def warm_init(
    registry: Registry,
    spec: GuideSpec,
    values: Mapping[str, torch.Tensor],
    init_loc_fn: Any = None,
) -> Callable:
    """Return ``init_to_value(values, fallback=...)`` for a guide of ``spec``.

    The fallback, for sites ``values`` lacks, is ``init_loc_fn`` (a strategy
    or its registered name) or else the guide's own default.
    """
    if isinstance(init_loc_fn, str):
        init_loc_fn = registry.init_strategy(init_loc_fn)
    fallback = init_loc_fn if init_loc_fn is not None else default_init(spec)
    return init_to_value(values=dict(values), fallback=fallback)


def warm_start(
    registry: Registry, spec: GuideSpec, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Return ``kwargs`` with ``init_from`` turned into the guide's ``init_loc_fn``.

    Raises
    ------
    UnexpectedKeywordError
        The guide takes no ``init_loc_fn``, so it cannot start anywhere else.
    """
    kwargs = dict(kwargs)
    init_from = kwargs.pop("init_from")
    if init_from is None:
        return kwargs
    if not accepts(spec, "init_loc_fn"):
        raise UnexpectedKeywordError(
            f"guide {spec.name!r} ({spec.class_name}) takes no init_loc_fn, so it "
            "cannot start from init_from=; build it without init_from"
        )
    values = trained_values(init_from)
    kwargs["init_loc_fn"] = warm_init(registry, spec, values, kwargs.get("init_loc_fn"))
    return kwargs
