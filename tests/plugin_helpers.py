"""Shared by the family tests: a family available through the registry."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType

from guide_core import registry


@contextlib.contextmanager
def family_registered(module: ModuleType, guide_name: str) -> Iterator[None]:
    """The family of ``module`` through its entry point, or registered in-process
    (and removed after) where the installed metadata predates it."""
    if guide_name in registry.names():
        yield
        return
    name = registry.register(module, name=f"{module.__name__}_test")
    try:
        yield
    finally:
        registry.unregister(name)
