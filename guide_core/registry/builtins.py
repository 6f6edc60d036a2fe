"""The core's own plugin: it registers the ``init_to_*`` strategies by name.

It is registered through the same hook as every other plugin, so
``registry.make(name, model, init_loc_fn="median")`` finds them like any
third party's strategy.
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.initialization import builtin_strategies
from .hookspecs import hookimpl
from .spec import InitStrategySpec


@hookimpl
def register_init_strategies(register: Callable[[InitStrategySpec], None]) -> None:
    """Register ``feasible``, ``sample``, ``median``, ``mean``, ``uniform``, ..."""
    for name, (strategy, summary) in builtin_strategies().items():
        register(InitStrategySpec(name=name, strategy=strategy, summary=summary))
