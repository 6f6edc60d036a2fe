"""``init_loc_fn="pathfinder"``: start every site where Pathfinder puts it.

A strategy only sees one site at a time, but Pathfinder needs the model and
its arguments; so the strategy has a ``prepare(model, args, kwargs)`` method,
which the core calls before a guide's first run of the model. It runs
single-path Pathfinder there and hands each site the mean of the Gaussian it
found (mapped to the site's support); a site it has no value for falls back
to :func:`~guide_core.init_to_median`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from guide_core import init_to_median
from guide_core.plugin import unwrap_init

from .guide import AutoPathfinder

__all__ = ["InitToPathfinder", "init_to_pathfinder", "unwrap_init"]


class InitToPathfinder:
    """An init strategy that starts at Pathfinder's mean.

    Parameters
    ----------
    num_paths : int
        Paths of the Pathfinder run (see ``AutoPathfinder``).
    fallback : callable
        For sites Pathfinder gives no value.
    """

    def __init__(self, num_paths: int = 1, fallback: Callable = init_to_median):
        self.num_paths = num_paths
        self.fallback = fallback
        self.values: dict[str, torch.Tensor] = {}
        self._busy = False
        self.__name__ = "init_to_pathfinder"

    def prepare(self, model: Callable, args: tuple, kwargs: dict) -> None:
        """Run Pathfinder on ``model(*args, **kwargs)``; keep each site's mean."""
        if self._busy:  # Pathfinder's own prototype run: nothing to prepare
            return
        self._busy = True
        try:
            guide = AutoPathfinder(unwrap_init(model), num_paths=self.num_paths)
            guide.run(*args, **kwargs)
            loc, _ = guide.moments()
            unconstrained = guide._layout.unpack_stacked(loc)
            self.values = guide._layout.constrain(unconstrained)
        finally:
            self._busy = False

    def __call__(self, site: dict | None = None) -> Any:
        if site is None:
            return self
        value = self.values.get(site["name"])
        fn = site["fn"]
        shape = getattr(fn, "batch_shape", ()) + getattr(fn, "event_shape", ())
        if self._busy or value is None or value.shape != shape:
            return self.fallback(site)
        return value.detach().clone()


#: The registered ``init_loc_fn="pathfinder"``; call ``InitToPathfinder(...)``
#: for other settings.
init_to_pathfinder = InitToPathfinder()
