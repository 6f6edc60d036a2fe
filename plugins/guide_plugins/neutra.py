"""NeuTra: reparametrize a model through a trained AutoContinuous guide, for MCMC.

Pyro's ``pyro.infer.reparam.NeuTraReparam`` only accepts Pyro's own guide
classes; :class:`NeuTraReparam` here does the same job for the guides of this
project (any :class:`~guide_plugins.continuous.AutoContinuous`, flows
included, and ``AutoLowRankMultivariateNormal`` too, which Pyro cannot
precondition). Usage::

    guide = AutoIAFNormal(model)
    ...  # train it with SVI
    neutra = NeuTraReparam(guide)
    nuts = NUTS(neutra.reparam(model))
    mcmc = MCMC(nuts, num_samples=500, warmup_steps=500)
    mcmc.run(data)
    samples = neutra.transform_sample(mcmc.get_samples()["x_shared_latent"])

HMC then moves in the guide's base space (approximately white noise), where
the posterior is much better conditioned than the model's own geometry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import sum_rightmost
from pyro.infer.reparam.reparam import Reparam
from pyro.poutine.plate_messenger import block_plate

from guide_plugins.continuous import AutoContinuous

__all__ = ["NeuTraReparam"]


class NeuTraReparam(Reparam):
    """Neural transport reparametrizer of all latent sites of a model at once.

    Every latent site of the guide's model is replaced by a slice of one
    shared latent ``<first site>_shared_latent``, drawn from the guide's base
    distribution and pushed through the guide's transform. All sites must
    share this one instance, and the model's structure must be static.

    The log-det of the guide's transform is added once, as the factor site
    ``<first site>_shared_latent_log_det``, so the reparametrized model's log
    density is exactly ``log p(T(z)) + log |det dT/dz|`` (with each site's own
    bijection in ``T``) whatever the first site's shape and whether the
    transform's log-det is elementwise (``event_dim=0``) or summed
    (``event_dim=1``).

    Parameters
    ----------
    guide : AutoContinuous
        A trained guide of this project that implements ``get_base_dist`` and a
        ``get_transform`` that does not depend on the model's arguments.
    """

    def __init__(self, guide: AutoContinuous):
        if not isinstance(guide, AutoContinuous):
            raise TypeError(
                "NeuTraReparam needs an AutoContinuous guide of guide_core (e.g. "
                f"AutoIAFNormal or AutoMultivariateNormal), not {type(guide).__name__}"
            )
        self.guide = guide
        self.transform = None
        self.x_unconstrained: dict[str, torch.Tensor] = {}

    def _layout(self):
        if self.guide.prototype_trace is None:
            raise RuntimeError(
                "NeuTraReparam's guide has not been called yet: train it (or call "
                "it once with the model's arguments) before reparametrizing"
            )
        return self.guide._layout

    def _reparam_config(self, site: dict) -> NeuTraReparam | None:
        return self if site["name"] in self._layout().names else None

    def reparam(self, fn: Callable | None = None) -> Any:
        """Return ``fn`` (or a decorator) with every guided site reparametrized."""
        return poutine.reparam(fn, config=self._reparam_config)

    def _draw_shared_latent(
        self, name: str, compute_density: bool
    ) -> dict[str, torch.Tensor]:
        """Sample the shared latent at the first site; return every site's slice.

        The log-det of the guide's transform is a term of the shared latent, not
        of any one site, so it gets a factor of its own (outside the model's
        plates, like the latent itself), summed over the latent's one event dim
        whatever the transform's ``event_dim``. Folding it into the first
        site's point mass instead would broadcast it over that site's batch
        shape and count it once per element there: a different HMC target as
        soon as the first site is batched and the log-det depends on ``z``.
        """
        try:
            self.transform = self.guide.get_transform()
            base = self.guide.get_base_dist()
        except (NotImplementedError, TypeError) as exc:
            raise ValueError(
                f"NeuTraReparam needs {type(self.guide).__name__} to implement "
                "get_base_dist() and a get_transform() that takes no model "
                "arguments"
            ) from exc
        with contextlib.ExitStack() as stack:
            for plate in self.guide._prototype.plates.values():
                stack.enter_context(block_plate(dim=plate.dim, strict=False))
            z = pyro.sample(f"{name}_shared_latent", base.mask(False))
            x = self.transform(z)
            if compute_density:
                log_det = self.transform.log_abs_det_jacobian(z, x)
                log_det = sum_rightmost(log_det, log_det.dim() - (z.dim() - 1))
                pyro.factor(f"{name}_shared_latent_log_det", log_det)
        return self._layout().unpack(x)

    def apply(self, msg: dict) -> dict:
        """Replace one latent site by its slice of the transformed shared latent."""
        name, fn, value = msg["name"], msg["fn"], msg["value"]
        if name not in self._layout().names:
            return {"fn": fn, "value": value, "is_observed": msg["is_observed"]}
        if msg["is_observed"]:
            raise NotImplementedError(
                f"NeuTraReparam cannot reparametrize the observed site {name!r}; "
                "reparametrize only latent sites"
            )
        compute_density = poutine.get_mask() is not False
        if name not in self.x_unconstrained:  # the first site: draw the latent
            self.x_unconstrained = self._draw_shared_latent(name, compute_density)
        u = self.x_unconstrained.pop(name)
        bijection = torch.distributions.biject_to(fn.support)
        value = bijection(u)
        log_density = 0.0
        if compute_density:
            ladj = bijection.log_abs_det_jacobian(u, value)
            ladj = sum_rightmost(ladj, ladj.dim() - value.dim() + fn.event_dim)
            log_density = fn.log_prob(value) + ladj
        delta = dist.Delta(value, log_density, event_dim=fn.event_dim)
        return {"fn": delta, "value": value, "is_observed": True}

    def transform_sample(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map draws of the shared latent to ``{site name: constrained value}``.

        ``latent`` has shape ``batch + (latent_dim,)``. A batch padded with
        size-1 dims for the model's plates (as Pyro requires, e.g.
        ``(N, 1, D)`` for one plate) is aligned to the plates; an unpadded
        batch such as MCMC's ``(N, D)`` is prepended to each site's shape. Both
        give each site the shape ``(N,) + its shape``.
        """
        if self.transform is None:
            self.transform = self.guide.get_transform()
        layout = self._layout()
        x = self.transform(latent)
        batch = x.shape[:-1]
        nesting = max(
            (-p.dim for p in self.guide._prototype.plates.values()), default=0
        )
        padded = len(batch) > nesting and all(
            d == 1 for d in batch[len(batch) - nesting :]
        )
        values = layout.unpack(x) if padded or not batch else layout.unpack_stacked(x)
        return layout.constrain(values)
