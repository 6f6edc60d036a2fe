"""The AutoMessenger protocol: guides written as effect handlers over the model.

An :class:`AutoMessenger` runs the model itself and, at each latent site,
replaces the prior with ``get_posterior(name, prior)``; a subclass may override
that for one site and fall back to ``super().get_posterior`` for the rest.
Medians and quantiles come from the same ``get_posterior``, reduced to the
requested summary, so a user's override is summarised correctly too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyro.distributions as dist
import torch
from pyro.nn.module import PyroModule, pyro_method
from pyro.ops.tensor_utils import periodic_repeat
from pyro.poutine.guide import GuideMessenger
from pyro.poutine.runtime import get_plates
from pyro.poutine.util import site_is_subsample

from .draws import PosteriorDraws
from .guide import record_init_call
from .summaries import as_quantiles, distribution_median, distribution_quantiles

__all__ = ["AutoMessenger"]


class _AutoMessengerMeta(type(GuideMessenger), type(PyroModule)):
    """Joins the metaclasses of ``GuideMessenger`` (ABC) and ``PyroModule``."""


class AutoMessenger(
    GuideMessenger, PyroModule, PosteriorDraws, metaclass=_AutoMessengerMeta
):
    """Base class of automatic guides built on ``pyro.poutine.guide.GuideMessenger``.

    Parameters
    ----------
    model : callable
        A Pyro model.
    amortized_plates : tuple of str
        Names of plates across which guide parameters are shared rather than
        created per element; use it when subsampling such a plate.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        record_init_call(cls)  # so that guide_core.save can rebuild the guide

    def __init__(self, model: Callable, *, amortized_plates: tuple[str, ...] = ()):
        if isinstance(amortized_plates, str):
            raise TypeError(
                f"'amortized_plates' must be a tuple of plate names, e.g. "
                f"({amortized_plates!r},), not the string {amortized_plates!r}"
            )
        self.amortized_plates = tuple(amortized_plates)
        self._summary: Callable[[Any], torch.Tensor] | None = None
        super().__init__(model)

    @pyro_method
    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        # Plates open around the guide (e.g. vectorized particles) are not the
        # model's: parameters created lazily must not be batched over them.
        self._outer_plates = tuple(f.name for f in get_plates())
        try:
            return super().__call__(*args, **kwargs)
        finally:
            del self._outer_plates

    def call(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        """Call the guide and return its values as a tuple sorted by site name.

        ``torch.jit.trace_module`` cannot trace a dict result; this can be traced.
        """
        result = self(*args, **kwargs)
        return tuple(value for _, value in sorted(result.items()))

    def _pyro_sample(self, msg: dict) -> None:
        if self._summary is None:
            return super()._pyro_sample(msg)
        if msg["is_observed"] or site_is_subsample(msg):
            return None
        prior = msg["fn"]
        posterior = self.get_posterior(msg["name"], prior)
        if not isinstance(posterior, torch.Tensor):
            posterior = self._summary(posterior)
        msg["infer"]["prior"] = prior
        msg["fn"] = dist.Delta(posterior, event_dim=prior.event_dim).expand(
            prior.batch_shape
        )
        return None

    def _summarize(
        self, summary: Callable[[Any], torch.Tensor], args: tuple, kwargs: dict
    ) -> dict[str, torch.Tensor]:
        self._summary = summary
        try:
            with torch.no_grad():
                return self(*args, **kwargs)
        finally:
            self._summary = None

    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Run the model at each site's posterior median; return its sample values.

        As with ``pyro.infer.autoguide``, the result holds every sample site the
        model visits (observed ones too), each latent at its median given the
        medians upstream.
        """
        return self._summarize(distribution_median, args, kwargs)

    def quantiles(
        self, quantiles: Sequence[float] | torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Return posterior quantiles of each latent site, levels on dim 0.

        Each level is one run of the model with every latent at that level of
        its posterior given the upstream values at the same level (exact for
        mean-field posteriors).
        """
        levels = as_quantiles(quantiles)
        runs = []
        for q in levels:
            summary = lambda d, q=q: distribution_quantiles(d, q.reshape(1))[0]  # noqa: E731
            runs.append(self._latent_values(self._summarize(summary, args, kwargs)))
        return {name: torch.stack([r[name] for r in runs]) for name in runs[0]}

    def _latent_values(
        self, values: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        trace = self.trace
        return {
            name: value
            for name, value in values.items()
            if name in trace.nodes
            and not trace.nodes[name]["is_observed"]
            and not site_is_subsample(trace.nodes[name])
            and trace.nodes[name]["type"] == "sample"
        }

    @torch.no_grad()
    def _adjust_plates(self, value: torch.Tensor, event_dim: int) -> torch.Tensor:
        """Shape an initial parameter value for the plates the site is in.

        Averages over particle and amortized plates (one shared parameter),
        repeats over subsampled plates (a full-size parameter) and drops the
        leading singleton dims.
        """
        for frame in get_plates():
            dim = frame.dim - event_dim
            full_size = frame.full_size or frame.size
            shared = frame.name in self._outer_plates or (
                frame.name in self.amortized_plates
            )
            if shared:
                if -value.dim() <= dim:
                    value = value.mean(dim, keepdim=True)
            elif frame.size != full_size:
                value = periodic_repeat(value, full_size, dim).contiguous()
        while value.dim() > event_dim and value.shape[0] == 1:
            value = value.squeeze(0)
        return value
