"""The hooks a guide plugin implements.

Each hook receives a ``register`` callback; a plugin calls it once per thing it
provides and never builds lists itself, so the registry stays in charge of
validation and de-duplication. An implementation may omit arguments it does not
use, which lets hooks grow new arguments without breaking plugins.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from .spec import BackendSpec, GuideSpec, InitStrategySpec

PROJECT = "guide_core"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register guides: call ``register(GuideSpec(...))`` once per guide."""


@hookspec
def register_init_strategies(register: Callable[[InitStrategySpec], None]) -> None:
    """Register named initialization strategies usable as ``init_loc_fn="name"``."""


@hookspec
def register_gaussian_backends(register: Callable[[BackendSpec], None]) -> None:
    """Register AutoGaussian back ends, usable as ``AutoGaussian(model, backend=n)``."""
