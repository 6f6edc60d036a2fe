"""Guides that bring their own fitting procedure (Pathfinder, ...).

A family registers ``GuideSpec(procedure=...)``; :func:`procedure_of` finds it
for a guide, so ``guide_core.fit``, ``guide-core fit`` and ``compare`` run it
instead of SVI, the same way for a built-in family and a third party's.
"""

from __future__ import annotations

from typing import Any

from ...registry import default_registry
from ...registry.spec import Procedure

__all__ = ["procedure_of"]


def procedure_of(guide: Any) -> Procedure | None:
    """The registered fitting procedure of ``guide``'s class, if any."""
    by_class = {spec.factory: spec.procedure for spec in default_registry()}
    for cls in type(guide).__mro__:
        if by_class.get(cls) is not None:
            return by_class[cls]
    return None
