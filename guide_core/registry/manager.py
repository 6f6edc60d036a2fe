"""The :class:`Registry`: a pluggy plugin manager and the tables its hooks fill.

The module-level API (``registry.make`` and friends) in :mod:`guide_core.registry`
acts on one default instance of it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from importlib import metadata
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .checks import check_keywords, require_extras, takes_keyword
from .discovery import (
    DISABLE_AUTOLOAD_ENV,
    DISABLE_PLUGINS_ENV,
    BrokenPlugin,
    blocked_plugins,
    default_entry_points,
    env_flag,
    load_entry_points,
)
from .errors import (
    BrokenPluginError,
    DuplicateNameError,
    UnknownBackendError,
    UnknownGuideError,
    UnknownInitStrategyError,
    close_matches,
    did_you_mean,
)
from .spec import BackendSpec, GuideSpec, InitStrategySpec
from .warm_start import warm_start

__all__ = ["BrokenPlugin", "Registry", "current_registry", "default_registry"]

_BUILTIN = "guide_core.registry.builtins"
# hook name -> (what it registers, in words; the spec type its register() takes)
_KINDS: dict[str, tuple[str, type]] = {
    "register_guides": ("guide", GuideSpec),
    "register_init_strategies": ("init strategy", InitStrategySpec),
    "register_gaussian_backends": ("back end", BackendSpec),
}
_GUIDES, _INITS, _BACKENDS = _KINDS


@attrs.define(repr=False)
class Registry:
    """A set of plugins and the guides, strategies and back ends they registered.

    Parameters
    ----------
    autoload : bool or None
        Load ``guide_core`` entry points; ``None`` reads
        ``GUIDE_CORE_DISABLE_PLUGIN_AUTOLOAD``.
    entry_points : callable or None
        Returns the entry points to load (default: the installed ones). Tests
        use it to inject plugins without installing them.
    """

    autoload: bool | None = None
    entry_points: Callable[[], Iterable[metadata.EntryPoint]] | None = None
    _pm: pluggy.PluginManager = attrs.field(init=False)
    _loaded: bool = attrs.field(init=False, default=False)
    _tables: dict[str, dict[str, Any]] = attrs.field(init=False, factory=dict)
    _conflicts: dict[tuple[str, str], list[str]] = attrs.field(init=False, factory=dict)
    _import_broken: dict[str, BrokenPlugin] = attrs.field(init=False, factory=dict)
    _hook_broken: dict[str, BrokenPlugin] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)

    # -- loading ---------------------------------------------------------------

    def load(self) -> None:
        """Load the built-in and installed plugins once; later calls do nothing."""
        if self._loaded:
            return
        self._loaded = True
        for name in blocked_plugins():
            self._pm.set_blocked(name)
        self._pm.register(importlib.import_module(_BUILTIN), name=_BUILTIN)
        autoload = self.autoload
        if autoload is None:
            autoload = not env_flag(DISABLE_AUTOLOAD_ENV)
        if autoload:
            source = self.entry_points or default_entry_points
            self._import_broken = load_entry_points(self._pm, source)
        self._rebuild()

    def _rebuild(self) -> None:
        """Recollect every plugin's registrations from scratch."""
        self._tables = {hook: {} for hook in _KINDS}
        self._conflicts, self._hook_broken = {}, {}
        for name, _ in self._pm.list_name_plugin():
            self._collect(name)

    def _collect(self, plugin_name: str) -> list[tuple[str, str]]:
        """Run one plugin's hooks; return the ``(hook, name)`` pairs it added."""
        plugin = self._pm.get_plugin(plugin_name)
        added: list[tuple[str, str]] = []

        def registrar(hook: str) -> Callable[[Any], None]:
            kind, spec_type = _KINDS[hook]

            def register(spec: Any) -> None:
                if not isinstance(spec, spec_type):
                    raise TypeError(
                        f"plugin {plugin_name!r}: the register() of {hook} takes a "
                        f"{spec_type.__name__}, got {type(spec).__name__}"
                    )
                self._add(hook, attrs.evolve(spec, plugin=plugin_name))
                added.append((hook, spec.name))

            return register

        for hook in _KINDS:
            for impl in getattr(self._pm.hook, hook).get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                try:
                    impl.function(**{arg: registrar(hook) for arg in impl.argnames})
                except Exception as exc:  # noqa: BLE001 - isolate every plugin
                    self._hook_broken[plugin_name] = BrokenPlugin.from_error(
                        plugin_name,
                        f"plugin {plugin!r}",
                        exc,
                        [name for _, name in added],
                    )
                    self._drop(plugin_name)  # half a plugin is not kept
                    return added
        return added

    def _drop(self, plugin_name: str) -> None:
        for table in self._tables.values():
            for key in [k for k, spec in table.items() if spec.plugin == plugin_name]:
                del table[key]
        for owners in self._conflicts.values():
            while plugin_name in owners:
                owners.remove(plugin_name)

    def _add(self, hook: str, spec: Any) -> None:
        table, key = self._tables[hook], (hook, spec.name)
        if key in self._conflicts:
            self._conflicts[key].append(spec.plugin)
        elif spec.name in table and table[spec.name].plugin != spec.plugin:
            self._conflicts[key] = [table.pop(spec.name).plugin, spec.plugin]
        else:
            table[spec.name] = spec

    def _conflict_error(self, hook: str, name: str) -> DuplicateNameError:
        owners = " and ".join(repr(p) for p in self._conflicts[(hook, name)])
        return DuplicateNameError(
            f"{_KINDS[hook][0]} {name!r} is registered by two plugins: {owners}\n"
            f"uninstall one, or block one with {DISABLE_PLUGINS_ENV}=<plugin name>"
        )

    def _lookup(self, hook: str, name: str) -> Any:
        self.load()
        if name in self._tables[hook]:
            return self._tables[hook][name]
        if (hook, name) in self._conflicts:
            raise self._conflict_error(hook, name)
        return None

    # -- plugins ---------------------------------------------------------------

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register an in-process plugin (a module or object with hook functions).

        Returns the name it was registered under. Raises :class:`DuplicateNameError`
        if it claims a name another plugin holds, and :class:`BrokenPluginError`
        if one of its hooks raises; in both cases nothing of it is kept.
        """
        self.load()
        name = self._pm.register(plugin, name=name)
        if name is None:
            raise ValueError(f"plugin {plugin!r} is blocked by {DISABLE_PLUGINS_ENV}")
        added = self._collect(name)
        clashes = [key for key in added if key in self._conflicts]
        failed = self._hook_broken.get(name)
        if clashes or failed:
            errors = [self._conflict_error(*key) for key in clashes]
            self.unregister(name)
            if errors:
                raise DuplicateNameError("\n".join(str(e) for e in errors))
            raise BrokenPluginError(
                f"plugin {name!r} failed to register: {failed.error!r}"
            ) from failed.error
        return name

    def unregister(self, name: str) -> None:
        """Remove a plugin and everything it registered."""
        self.load()
        self._pm.unregister(name=name)
        self._import_broken.pop(name, None)
        self._rebuild()

    def plugins(self) -> dict[str, object]:
        """Return ``{plugin name: plugin object}`` for every loaded plugin."""
        self.load()
        return dict(self._pm.list_name_plugin())

    def broken(self) -> dict[str, BrokenPlugin]:
        """Return the plugins that failed to load or register, by name."""
        self.load()
        return {**self._import_broken, **self._hook_broken}

    # -- guides ----------------------------------------------------------------

    def names(self) -> list[str]:
        """Return the sorted names of every usable guide."""
        self.load()
        return sorted(self._tables[_GUIDES])

    def __iter__(self) -> Iterator[GuideSpec]:
        return iter([self._tables[_GUIDES][n] for n in self.names()])

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        state = f"{len(self._tables[_GUIDES])} guides" if self._loaded else "unloaded"
        return f"<Registry {state}>"

    def families(self) -> dict[str, list[str]]:
        """Return ``{family: [guide names]}``, both sorted."""
        out: dict[str, list[str]] = {}
        for spec in self:
            out.setdefault(spec.family, []).append(spec.name)
        return dict(sorted(out.items()))

    def info(self, name: str) -> GuideSpec:
        """Return the :class:`GuideSpec` of a guide, by registry or class name.

        Raises :class:`UnknownGuideError` (listing close matches and every name),
        :class:`DuplicateNameError` (naming both plugins) or
        :class:`BrokenPluginError` (raised from the error of the plugin that
        provides it).
        """
        spec = self._lookup(_GUIDES, name)
        if spec is not None:
            return spec
        table = self._tables[_GUIDES]
        by_class = {s.class_name: s for s in table.values()}
        if name in by_class:
            return by_class[name]
        broken = self.broken()
        owners = [b for b in broken.values() if name in b.provides]
        if not owners and not close_matches(name, list(table) + list(by_class)):
            owners = list(broken.values())  # no better guess than the broken one
        if len(owners) == 1:
            b = owners[0]
            raise BrokenPluginError(
                f"guide {name!r} is unavailable: plugin {b.name!r} ({b.source}) "
                f"failed to load with {type(b.error).__name__}: {b.error}\n"
                f"fix or uninstall it, or block it with {DISABLE_PLUGINS_ENV}={b.name}"
            ) from b.error
        note = f"broken plugins: {', '.join(broken)}\n" if broken else ""
        raise UnknownGuideError(
            f"guide {name!r} not found\n"
            f"{did_you_mean(name, list(table) + list(by_class))}"
            f"available guides: {', '.join(sorted(table)) or '(none)'}\n{note}"
            "use 'python -m guide_core list' for details"
        )

    def find_class(self, class_name: str) -> Any:
        """Return the registered guide or back-end class called ``class_name``.

        An abstract base class that a family does not register by name (such
        as ``AutoContinuous``) is found as a base of the classes it does
        register, so it can be imported for subclassing.

        Raises :class:`AttributeError` if no plugin registers such a class.
        """
        self.load()
        factories = [
            spec.factory
            for hook in (_GUIDES, _BACKENDS)
            for spec in self._tables[hook].values()
        ]
        for factory in factories:
            if getattr(factory, "__name__", None) == class_name:
                return factory
        for factory in factories:
            for base in getattr(factory, "__mro__", ())[1:]:
                if base.__name__ == class_name:
                    return base
        raise AttributeError(class_name)

    def make(self, name: str, model: Callable, **kwargs: Any) -> Any:
        """Build the guide ``name`` for ``model`` with the guide's keyword arguments.

        ``init_loc_fn`` may be a strategy name such as ``"median"``; ``backend``
        is checked against the installed back ends; ``init_from=trained_guide``
        (or a ``{site: value}`` dict) starts at that guide's median. Besides the
        errors of :meth:`info`, raises :class:`UnexpectedKeywordError` for a
        keyword the guide does not take and :class:`MissingExtraError` for a
        missing package. While the guide is built, :func:`current_registry`
        returns this registry, so a guide made of other guides (``"auto"``)
        looks them up here.
        """
        spec = self.info(name)
        require_extras(f"guide {spec.name!r}", spec.extras)
        if "init_from" in kwargs and not takes_keyword(spec, "init_from"):
            kwargs = warm_start(self, spec, kwargs)
        check_keywords(spec, kwargs)
        if isinstance(kwargs.get("init_loc_fn"), str):
            kwargs["init_loc_fn"] = self.init_strategy(kwargs["init_loc_fn"])
        if spec.backends and isinstance(kwargs.get("backend"), str):
            self.backend(kwargs["backend"])
        token = _making.set(self)
        try:
            return spec.factory(model, **kwargs)
        finally:
            _making.reset(token)

    def compose(
        self,
        model: Callable,
        assignments: Mapping[str, str | None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``make("auto", model, assignments=assignments, **kwargs)``: a guide
        per site (see :func:`guide_core.compose`)."""
        return self.make("auto", model, assignments=assignments, **kwargs)

    # -- init strategies and back ends -----------------------------------------

    def init_strategies(self) -> dict[str, InitStrategySpec]:
        """Return every named initialization strategy, by name."""
        self.load()
        return dict(sorted(self._tables[_INITS].items()))

    def init_strategy(self, name: str) -> Callable:
        """Return the strategy registered as ``name`` (the ``init_to_`` is optional)."""
        key = name.removeprefix("init_to_")
        spec = self._lookup(_INITS, key)
        if spec is not None:
            return spec.strategy
        table = self._tables[_INITS]
        raise UnknownInitStrategyError(
            f"init strategy {name!r} not found\n{did_you_mean(key, table)}"
            f"available init strategies: {', '.join(sorted(table))}"
        )

    def backends(self) -> dict[str, BackendSpec]:
        """Return every AutoGaussian back end, by name."""
        self.load()
        return dict(sorted(self._tables[_BACKENDS].items()))

    def backend(self, name: str) -> BackendSpec:
        """Return the back end ``name`` after checking its packages are installed.

        Raises :class:`UnknownBackendError` listing the installed back ends, or
        :class:`MissingExtraError` saying which extra to install.
        """
        spec = self._lookup(_BACKENDS, name)
        if spec is None:
            table = self._tables[_BACKENDS]
            raise UnknownBackendError(
                f"AutoGaussian back end {name!r} not found\n{did_you_mean(name, table)}"
                f"installed back ends: {', '.join(sorted(table)) or '(none)'}"
            )
        require_extras(
            f"AutoGaussian back end {name!r}", spec.extras, spec.install_hint
        )
        return spec


_default = Registry()
_making: ContextVar[Registry | None] = ContextVar("guide_core_registry", default=None)


def default_registry() -> Registry:
    """Return the process-wide registry that the module-level functions use."""
    return _default


def current_registry() -> Registry:
    """Return the registry whose :meth:`~Registry.make` is running, else the
    default one; guides built from other guides look those up here."""
    return _making.get() or _default
