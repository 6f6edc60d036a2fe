"""Checks the registry runs before building a guide: keywords and extra packages."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from .discovery import missing_modules
from .errors import MissingExtraError, UnexpectedKeywordError, did_you_mean
from .spec import GuideSpec

__all__ = ["check_keywords", "require_extras"]


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
