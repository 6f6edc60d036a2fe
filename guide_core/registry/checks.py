"""Checks the registry runs before building a guide: keywords and extra packages,
and what a guide's constructor takes (:func:`accepts`, :func:`default_init`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from ..core.initialization import init_to_feasible
from .discovery import missing_modules
from .errors import MissingExtraError, UnexpectedKeywordError, did_you_mean
from .spec import GuideSpec

__all__ = ["accepts", "check_keywords", "default_init", "require_extras"]
__all__ += ["takes_keyword"]


def check_keywords(spec: GuideSpec, kwargs: dict[str, Any]) -> None:
    """Raise :class:`UnexpectedKeywordError` for a keyword the guide does not take."""
    try:
        params = list(inspect.signature(spec.factory).parameters.values())
    except (TypeError, ValueError):  # no introspectable signature: let it check
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params[1:] if p.kind is not p.VAR_POSITIONAL]
    for key in kwargs:
        if key not in accepted:
            raise UnexpectedKeywordError(
                f"guide {spec.name!r} ({spec.class_name}) does not take keyword "
                f"{key!r}\n{did_you_mean(key, accepted)}"
                f"it takes: {', '.join(accepted) or '(no keywords)'}"
            )


def require_extras(what: str, extras: Iterable[str], install_hint: str = "") -> None:
    """Raise :class:`MissingExtraError` naming what to install if a package is
    missing; ``what`` says who needs it, e.g. ``"guide 'auto_x'"``."""
    missing = missing_modules(extras)
    if missing:
        hint = install_hint or f"guide-core[{missing[0]}]"
        raise MissingExtraError(
            f"{what} needs {', '.join(missing)}, which is not installed; "
            f"install it with: pip install '{hint}'"
        )


def _signatures(spec: GuideSpec) -> list[dict[str, inspect.Parameter]]:
    """The parameters of the factory and of its ``__init__``, where introspectable."""
    out = []
    for target in (spec.factory, getattr(spec.factory, "__init__", None)):
        try:
            out.append(dict(inspect.signature(target).parameters))
        except (TypeError, ValueError):
            continue
    return out


def accepts(spec: GuideSpec, keyword: str) -> bool:
    """Whether the guide of ``spec`` takes the constructor keyword ``keyword``."""
    for params in _signatures(spec):
        if keyword in params:
            return True
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return False
    return True  # nothing to introspect: let the guide check


def takes_keyword(spec: GuideSpec, keyword: str) -> bool:
    """Whether the factory of ``spec`` names ``keyword`` itself, not by ``**kw``."""
    return any(keyword in params for params in _signatures(spec)[:1])


def default_init(spec: GuideSpec) -> Callable | None:
    """The default ``init_loc_fn`` of the guide of ``spec`` (``None`` where the
    argument is deprecated and ignored, as in ``AutoIAFNormal``)."""
    for params in _signatures(spec):
        param = params.get("init_loc_fn")
        if param is not None and param.default is not param.empty:
            return param.default
    return init_to_feasible
