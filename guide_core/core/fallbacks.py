"""A switch between a dependency's private names and their public fallbacks.

:mod:`guide_core.core.private_torch` and
``guide_core.workflow.engines.private_pyro`` each hold one; its
:meth:`Fallbacks.public_only` makes every accessor there give its public
fallback within a block, so a test can check that the engines stay right
without the private names (as with a newer torch or Pyro that lacks them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["Fallbacks"]


class Fallbacks:
    """Whether private names are used (:attr:`private`), and a block where
    they are not."""

    def __init__(self) -> None:
        self.private = True

    @contextlib.contextmanager
    def public_only(self) -> Iterator[None]:
        """Within the block, the public fallbacks only."""
        before = self.private
        self.private = False
        try:
            yield
        finally:
            self.private = before
