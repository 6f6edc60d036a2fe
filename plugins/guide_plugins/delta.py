"""The ``delta`` family: :class:`AutoDelta`, a point (MAP) estimate of every site."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.nn.module import PyroParam

from guide_core import AutoGuide, Capabilities, GuideSpec, hookimpl, init_to_median
from guide_core.plugin import get_nested, point_quantiles, set_nested

__all__ = ["AutoDelta", "register_guides"]


class AutoDelta(AutoGuide):
    """A MAP guide: a point mass at a learned value for every latent site.

    The point is a parameter in the constrained space (param name
    ``AutoDelta.<site>``, constrained to the site's support), so SVI finds the
    MAP estimate in the constrained space. Its median and every quantile are
    the point itself. The guide does not depend on the model's arguments.

    Parameters
    ----------
    model : callable
        A Pyro model.
    init_loc_fn : callable
        Per-site initialization strategy (an ``init_to_*``).
    create_plates : callable, optional
        Returns the plates to use for data subsampling; see :class:`AutoGuide`.
    """

    def __init__(
        self,
        model: Callable,
        init_loc_fn: Callable = init_to_median,
        *,
        create_plates: Callable | None = None,
    ):
        self.init_loc_fn = init_loc_fn
        model = self._wrap_init(model, init_loc_fn)
        super().__init__(model, create_plates=create_plates)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        for name, site in self._prototype.continuous().items():
            param = PyroParam(site.init_value(), site.whole_support, site.event_dim)
            set_nested(self, name, param)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Sample every latent site at its point; return ``{site name: value}``."""
        self._ensure_setup(*args, **kwargs)
        self._create_plates(*args, **kwargs)
        result = {}
        for name, site in self._sites().items():
            with self._site_plates(site):
                point = dist.Delta(get_nested(self, name), event_dim=site.event_dim)
                result[name] = pyro.sample(name, point)
        return result

    def _median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return {n: get_nested(self, n).detach().clone() for n in self._sites()}

    def _quantiles(
        self, q: torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        return point_quantiles(self._median(), q)


@hookimpl
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register ``auto_delta``."""
    register(
        GuideSpec(
            name="auto_delta",
            factory=AutoDelta,
            family="delta",
            summary="Point mass per site: MAP estimation in the constrained space.",
            capabilities=Capabilities(subsample=True, jit=True, mean_field=True),
            objective="map",
        )
    )
