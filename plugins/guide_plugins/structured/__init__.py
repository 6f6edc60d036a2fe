"""The ``structured`` family: :class:`AutoStructured` and :class:`StructuredReparam`.

``AutoStructured`` gives each latent site a conditional (``"delta"``,
``"normal"``, ``"mvn"`` or a callable) and lets sites depend on each other
through shears (``"linear"`` or a callable); ``StructuredReparam`` uses a
trained one to precondition the model for HMC/NUTS.
"""

from __future__ import annotations

from collections.abc import Callable

from guide_core import Capabilities, GuideSpec, hookimpl

from .guide import AutoStructured
from .reparam import StructuredReparam

__all__ = ["AutoStructured", "StructuredReparam", "register_guides"]


@hookimpl
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register ``auto_structured``."""
    register(
        GuideSpec(
            name="auto_structured",
            factory=AutoStructured,
            family="structured",
            summary=(
                "Delta/Normal/MVN/custom conditional per site, sheared linearly or "
                "by callables along the model's dependencies."
            ),
            capabilities=Capabilities(subsample=False, jit=True),
        )
    )
