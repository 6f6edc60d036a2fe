"""An example third-party guide_core plugin: :class:`AutoPrior`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pyro import poutine

from guide_core import (
    AutoGuide,
    Capabilities,
    GuideSpec,
    InitMessenger,
    hookimpl,
    init_to_median,
)

__all__ = ["AutoPrior", "register_guides"]


def _observed(msg: dict) -> bool:
    return msg["type"] == "sample" and msg["is_observed"]


class AutoPrior(AutoGuide):
    """A guide that draws every latent site from its prior.

    It has no parameters, so SVI cannot improve it; its ELBO is a baseline that
    any fitted guide should beat. It runs the model with the observed sites
    hidden, so a site's prior may depend on upstream latents.

    Parameters
    ----------
    model : callable
        A Pyro model.
    """

    def __init__(self, model: Callable):
        super().__init__(model)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Sample each latent site from its prior; return ``{name: value}``."""
        self._ensure_setup(*args, **kwargs)
        trace = poutine.trace(poutine.block(self.model, hide_fn=_observed))
        model_trace = trace.get_trace(*args, **kwargs)
        return {name: model_trace.nodes[name]["value"] for name in self._sites()}

    def _median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        model = InitMessenger(init_to_median)(self.model)
        model_trace = poutine.block(poutine.trace(model).get_trace)(*args, **kwargs)
        return {name: model_trace.nodes[name]["value"] for name in self._sites()}


@hookimpl
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register ``auto_prior``."""
    register(
        GuideSpec(
            name="auto_prior",
            factory=AutoPrior,
            family="example",
            summary="Draws every latent from its prior: a parameter-free baseline.",
            capabilities=Capabilities(continuous=True, discrete=True, quantiles=False),
        )
    )
