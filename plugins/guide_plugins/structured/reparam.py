"""``StructuredReparam``: precondition a model with a trained ``AutoStructured``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping
from typing import Any

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.reparam.reparam import Reparam
from pyro.poutine.messenger import Messenger
from pyro.poutine.plate_messenger import block_plate

from .guide import AutoStructured

__all__ = ["StructuredReparam"]


class _FlatAuxiliaries(Messenger):
    """Gives the guide's auxiliary noise sites a flat (masked) prior."""

    def _pyro_sample(self, msg: dict) -> None:
        if msg["infer"].get("is_auxiliary") and not msg["is_observed"]:
            msg["fn"] = msg["fn"].mask(False)


class StructuredReparam(Reparam):
    """Reparametrize a model's latent sites through a trained :class:`AutoStructured`.

    Every latent site of the guide becomes a deterministic function of the
    guide's auxiliary noise sites (``<site>_aux``, and whatever a callable
    conditional samples), which become the model's latent variables, so HMC
    or NUTS explores the noise: nearly standard normal where the guide fits.
    The model's density is kept exactly for the sites with a Normal, MVN or
    callable conditional (the prior at the pushed-forward value plus the
    log-Jacobian of the map from noise to value); sites with a ``"delta"``
    conditional are fixed at the guide's point given their upstream noise,
    an approximation that conditions on a MAP-like estimate. Use one instance
    for all sites; the model must have static structure.

    Unlike ``pyro.infer.reparam.StructuredReparam`` (which keeps the noise's
    standard normal density and subtracts the log-Jacobian), the noise here
    has a flat prior and the log-Jacobian is added, so samples of the model's
    sites follow the model's posterior.

    Parameters
    ----------
    guide : AutoStructured
        A guide trained on the model (it has been called at least once).

    Examples
    --------
    >>> guide = AutoStructured(model)          # doctest: +SKIP
    >>> # ... train the guide with SVI ...
    >>> reparam = StructuredReparam(guide)     # doctest: +SKIP
    >>> mcmc = MCMC(NUTS(reparam.reparam(model)), 500)  # doctest: +SKIP
    >>> mcmc.run(data)                         # doctest: +SKIP
    >>> samples = reparam.transform_samples(mcmc.get_samples())  # doctest: +SKIP
    """

    def __init__(self, guide: AutoStructured):
        if not isinstance(guide, AutoStructured):
            raise TypeError(
                "StructuredReparam needs a trained guide_core AutoStructured, got "
                f"{type(guide).__module__}.{type(guide).__name__}"
            )
        if guide.prototype_trace is None:
            raise ValueError(
                "StructuredReparam needs a trained AutoStructured, but this guide "
                "has never been called; train it with SVI first (or call it once "
                "with the model's arguments)"
            )
        self.guide = guide.requires_grad_(False)
        self.deltas: dict[str, dist.Delta] = {}

    def _reparam_config(self, msg: dict) -> StructuredReparam | None:
        if msg["name"] in self.guide._sites():
            return self
        return None

    def reparam(self, fn: Callable | None = None) -> Callable:
        """Return ``fn`` (the model) with every guide site reparametrized."""
        return poutine.reparam(fn, config=self._reparam_config)

    def apply(self, msg: dict) -> dict[str, Any]:
        """Replace one latent site by the guide's point mass at that site."""
        name, fn = msg["name"], msg["fn"]
        if name not in self.guide._sites():
            return {"fn": fn, "value": msg["value"], "is_observed": msg["is_observed"]}
        if msg["is_observed"]:
            raise NotImplementedError(
                f"site {name!r} is observed in the model but latent in the guide; "
                "StructuredReparam reparametrizes latent sites only"
            )
        if name not in self.deltas:  # the first guide site: draw every site
            with contextlib.ExitStack() as stack:
                for plate in getattr(self.guide, "plates", {}).values():
                    stack.enter_context(block_plate(dim=plate.dim, strict=False))
                stack.enter_context(_FlatAuxiliaries())
                self.deltas = self.guide.get_deltas()
        point = self.deltas.pop(name)
        value = point.v
        if poutine.get_mask() is not False:
            # The guide's point carries -log|d value / d noise|: subtract it.
            log_density = fn.log_prob(value) - point.log_density
            point = dist.Delta(value, log_density, point.event_dim)
        return {"fn": point, "value": value, "is_observed": True}

    def transform_samples(
        self,
        aux_samples: Mapping[str, torch.Tensor],
        save_params: Collection[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Map samples of the auxiliary noise sites to the model's latent sites.

        Parameters
        ----------
        aux_samples : dict
            ``{auxiliary site: samples}``, e.g. ``mcmc.get_samples()``; a
            leading sample dimension is allowed.
        save_params : collection of str, optional
            Only compute these sites (the noise of the sites they depend on
            must be in ``aux_samples``).

        Returns
        -------
        dict
            ``{site name: samples}``.
        """
        with poutine.condition(data=dict(aux_samples)), poutine.mask(mask=False):
            deltas = self.guide.get_deltas(save_params, stacked=True)
        return {name: point.v for name, point in deltas.items()}
