"""The registry layer: hook specs, the plugin manager, discovery, specs and errors.

It may import the core (the built-in ``init_to_*`` strategies, warm starts) and
nothing above it: the ``"auto"`` guide (``guide_plugins.auto``) registers itself
through the ``register_guides`` hook like every family. Use the module-level functions,
which act on one default :class:`Registry`::

    from guide_core import registry
    guide = registry.make("auto_normal", model, init_loc_fn="median")
    registry.names()          # ['auto', 'auto_delta', 'auto_normal', ...]
    registry.info("auto_normal").capabilities

Plugins load on first use, never at ``import guide_core``. A plugin that fails to
load is kept aside as broken (see :func:`broken`) and never takes the others
down. ``GUIDE_CORE_DISABLE_PLUGIN_AUTOLOAD=1`` skips entry points and
``GUIDE_CORE_DISABLE_PLUGINS=a,b`` blocks single plugins.
"""

from __future__ import annotations

from .discovery import (
    DISABLE_AUTOLOAD_ENV,
    DISABLE_PLUGINS_ENV,
    ENTRY_POINT_GROUP,
    BrokenPlugin,
)
from .manager import Registry, current_registry, default_registry

_default = default_registry()

# The module-level API: ``registry.make(...)`` and friends act on the default.
make = _default.make
compose = _default.compose
names = _default.names
info = _default.info
families = _default.families
register = _default.register
unregister = _default.unregister
plugins = _default.plugins
broken = _default.broken
find_class = _default.find_class
init_strategy = _default.init_strategy
init_strategies = _default.init_strategies
backend = _default.backend
backends = _default.backends

__all__ = ["DISABLE_AUTOLOAD_ENV", "DISABLE_PLUGINS_ENV", "ENTRY_POINT_GROUP"]
__all__ += ["BrokenPlugin", "Registry", "current_registry", "default_registry"]
__all__ += ["backend", "backends", "broken", "compose", "families", "find_class"]
__all__ += ["info", "init_strategies", "init_strategy", "make", "names", "plugins"]
__all__ += ["register", "unregister"]
