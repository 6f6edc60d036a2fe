"""Finding plugins: entry points, broken-plugin records and extra-package checks."""

from __future__ import annotations

import importlib.util
import os
import traceback
from collections.abc import Callable, Iterable
from importlib import metadata

import attrs
import pluggy

from .errors import DuplicateNameError

ENTRY_POINT_GROUP = "guide_core"
DISABLE_AUTOLOAD_ENV = "GUIDE_CORE_DISABLE_PLUGIN_AUTOLOAD"
DISABLE_PLUGINS_ENV = "GUIDE_CORE_DISABLE_PLUGINS"


@attrs.frozen
class BrokenPlugin:
    """A plugin that raised while loading or registering.

    Attributes
    ----------
    name : str
        The plugin's name (its entry-point name for installed plugins).
    source : str
        Where it came from, e.g. ``"entry point 'x = pkg.mod' of dist 'pkg'"``.
    error : BaseException
        What it raised.
    traceback : str
        The formatted traceback, shown by ``python -m guide_core list``.
    provides : tuple of str
        Names it registered before failing.
    """

    name: str
    source: str
    error: BaseException = attrs.field(eq=False)
    traceback: str = attrs.field(eq=False, repr=False)
    provides: tuple[str, ...] = ()

    @classmethod
    def from_error(
        cls, name: str, source: str, exc: BaseException, provides: Iterable[str] = ()
    ) -> BrokenPlugin:
        """Record ``exc`` (with its traceback) against plugin ``name``."""
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(name, source, exc, tb, tuple(provides))


def env_flag(env: str) -> bool:
    """Return whether environment variable ``env`` is set to a true value."""
    return os.environ.get(env, "").strip().lower() not in ("", "0", "false", "no")


def blocked_plugins() -> list[str]:
    """Return the plugin names listed in ``GUIDE_CORE_DISABLE_PLUGINS``."""
    raw = os.environ.get(DISABLE_PLUGINS_ENV, "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def default_entry_points() -> list[metadata.EntryPoint]:
    """Return the installed entry points of the ``guide_core`` group."""
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def load_entry_points(
    pm: pluggy.PluginManager,
    entry_points: Callable[[], Iterable[metadata.EntryPoint]],
) -> dict[str, BrokenPlugin]:
    """Import and register each entry point; return the ones that failed.

    A failing plugin is recorded, never raised, so it cannot take the others
    down; the registry re-raises its error when one of its guides is asked for.
    """
    broken: dict[str, BrokenPlugin] = {}
    seen = set()
    for ep in entry_points():
        if (ep.name, ep.value) in seen:  # one distribution found twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
        source = f"entry point '{ep.name} = {ep.value}' of dist '{dist}'"
        if pm.is_blocked(ep.name):
            continue
        if pm.has_plugin(ep.name):
            exc = DuplicateNameError(
                f"plugin name {ep.name!r} is already taken by "
                f"{pm.get_plugin(ep.name)!r}; rename the entry point of dist '{dist}'"
            )
            broken[ep.name] = BrokenPlugin.from_error(ep.name, source, exc)
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # noqa: BLE001 - isolate every plugin
            broken[ep.name] = BrokenPlugin.from_error(ep.name, source, exc)
    return broken


def missing_modules(modules: Iterable[str]) -> list[str]:
    """Return the import names in ``modules`` that cannot be found."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing
