"""Exceptions raised by the registry; each subclasses the builtin a caller expects."""

from __future__ import annotations

__all__ = [
    "BrokenPluginError",
    "DuplicateNameError",
    "MissingExtraError",
    "RegistryError",
    "UnexpectedKeywordError",
    "UnknownBackendError",
    "UnknownGuideError",
    "UnknownInitStrategyError",
]


class RegistryError(Exception):
    """Base class of every error the registry raises."""


class UnknownGuideError(RegistryError, LookupError):
    """No guide is registered under the requested name."""


class UnknownInitStrategyError(RegistryError, LookupError):
    """No initialization strategy is registered under the requested name."""


class UnknownBackendError(RegistryError, LookupError):
    """No AutoGaussian back end is registered under the requested name."""


class DuplicateNameError(RegistryError, ValueError):
    """Two plugins registered the same name."""


class BrokenPluginError(RegistryError, ImportError):
    """A plugin failed to load; raised from its original error."""


class UnexpectedKeywordError(RegistryError, TypeError):
    """A keyword argument the guide's constructor does not take."""


class MissingExtraError(RegistryError, ImportError):
    """A guide or back end needs a package that is not installed."""


def close_matches(name: str, known: object) -> list[str]:
    """Return up to three names in ``known`` that look like ``name``."""
    import difflib

    return difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)


def did_you_mean(name: str, known: object) -> str:
    """Return a ``"did you mean 'x'?"`` line (with newline), or ``""``."""
    close = close_matches(name, known)
    if not close:
        return ""
    return "did you mean " + " or ".join(repr(c) for c in close) + "?\n"
