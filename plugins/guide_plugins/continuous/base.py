""":class:`AutoContinuous`: one joint posterior over a flat unconstrained latent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import Transform

from guide_core import AutoGuide, init_to_median
from guide_core.plugin import GaussianStart, LatentLayout, empirical_quantiles

__all__ = ["AutoContinuous"]


class AutoContinuous(AutoGuide):
    """Base class of guides with one joint posterior over all latent sites (ADVI).

    Every latent site is mapped to the unconstrained space by the bijection of
    its support; the unconstrained values are concatenated, in model order,
    into one vector of length :attr:`latent_dim`. A subclass defines the
    posterior of that vector, either through :meth:`get_posterior` or as
    :meth:`get_base_dist` pushed through :meth:`get_transform`. Each call
    samples the vector once at the auxiliary site ``_<ClassName>_latent`` and
    then every model site as a point mass at its constrained slice, carrying
    the log-det of its bijection.

    All latent sites must be continuous and the model's latent structure
    static. Local latents in a subsampled plate are refused with an error
    naming the plate, since the vector's length would change between steps.

    Summaries: if the subclass defines ``_loc_scale()`` (the mean and the
    marginal standard deviations of the vector, as the Gaussian guides do),
    :meth:`median` and :meth:`quantiles` are exact; otherwise they are
    estimated from :attr:`num_summary_samples` draws of the posterior, taken
    from a fork of the random state seeded with :attr:`summary_seed`, so
    training is not perturbed and a summary depends on the parameters alone.

    Parameters
    ----------
    model : callable
        A Pyro model.
    init_loc_fn : callable
        Per-site initialization strategy (an ``init_to_*``).

    Attributes
    ----------
    latent_dim : int
        The length of the flat latent vector (set on the first call).
    num_summary_samples : int
        Number of posterior draws behind sampled medians and quantiles.
    summary_seed : int
        The seed of those draws.
    """

    num_summary_samples: int = 1000
    summary_seed: int = 0

    def __init__(self, model: Callable, init_loc_fn: Callable = init_to_median):
        self.init_loc_fn = init_loc_fn
        model = self._wrap_init(model, init_loc_fn)
        super().__init__(model)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        name = type(self).__name__
        self._layout = LatentLayout.from_sites(self._prototype.sites, name)
        self.latent_dim = self._layout.dim
        if self.latent_dim == 0:
            raise RuntimeError(
                f"{name} found no latent sites in the model, so there is nothing to "
                "guide; use an empty guide such as `def guide(*args, **kwargs): pass`"
            )
        # The attributes of Pyro's class that code written against it reads.
        nodes = self.prototype_trace.nodes
        self._unconstrained_shapes = {s.name: s.shape for s in self._layout}
        self._cond_indep_stacks = {
            s.name: nodes[s.name]["cond_indep_stack"] for s in self._layout
        }

    def _init_loc(self) -> torch.Tensor:
        """The flat vector of every site's unconstrained initial value."""
        return self._layout.init_latent()

    def _unpack_latent(self, latent: torch.Tensor) -> Iterator[tuple[dict, Any]]:
        """Yield ``(prototype site, unconstrained value)`` for each site, as
        Pyro's ``AutoContinuous._unpack_latent`` does."""
        nodes = self.prototype_trace.nodes
        for name, value in self._layout.unpack(self._flat_latent(latent)).items():
            yield nodes[name], value

    # -- the posterior ---------------------------------------------------------

    def get_base_dist(self) -> dist.TorchDistribution:
        """Return the base distribution of the posterior written as
        ``TransformedDistribution(get_base_dist(), get_transform(...))``.

        It must not depend on the model's arguments.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not define get_base_dist(); override it "
            "(with get_transform()) or override get_posterior()"
        )

    def get_transform(self, *args: Any, **kwargs: Any) -> Transform:
        """Return the transform taking :meth:`get_base_dist` to the posterior."""
        raise NotImplementedError(
            f"{type(self).__name__} does not define get_transform(); override it "
            "(with get_base_dist()) or override get_posterior()"
        )

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.TorchDistribution:
        """Return the posterior of the flat latent vector (event shape
        ``(latent_dim,)``); by default the base distribution pushed through the
        transform."""
        base = self.get_base_dist()
        return dist.TransformedDistribution(base, self.get_transform(*args, **kwargs))

    def sample_latent(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Sample the flat latent vector at the site ``_<ClassName>_latent``."""
        posterior = self.get_posterior(*args, **kwargs)
        return pyro.sample(
            f"_{self._pyro_name}_latent", posterior, infer={"is_auxiliary": True}
        )

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Sample the latent vector, then every site; return ``{name: value}``."""
        self._ensure_setup(*args, **kwargs)
        latent = self.sample_latent(*args, **kwargs)
        self._create_plates(*args, **kwargs)
        return self._layout.emit(self._flat_latent(latent), self._site_plates)

    def _flat_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Return a draw of :meth:`get_posterior` as the flat vector of
        ``latent_dim`` (the identity here; batched guides reorder theirs)."""
        return latent

    # -- warm starts -----------------------------------------------------------

    def _start_in_layout(self, start: GaussianStart) -> tuple[torch.Tensor, ...]:
        """``(loc, covariance)`` of ``start`` in this guide's flat order."""
        order = [(s.name, s.stop - s.start) for s in self._layout]
        loc, cov = start.reorder(order)
        return loc.to(self._init_loc()), cov.to(self._init_loc())

    # -- summaries -------------------------------------------------------------

    def _loc_scale(
        self, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the mean and marginal standard deviations of the flat latent,
        for posteriors whose marginals are normal; others leave it undefined."""
        raise NotImplementedError

    def _has_loc_scale(self) -> bool:
        return type(self)._loc_scale is not AutoContinuous._loc_scale

    def _latent_quantiles(
        self, q: torch.Tensor, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Quantiles of each coordinate of the flat latent, shape ``(len(q), D)``."""
        if self._has_loc_scale():
            loc, scale = self._loc_scale(*args, **kwargs)
            q = q.to(dtype=loc.dtype, device=loc.device).unsqueeze(-1)
            return dist.Normal(loc.detach(), scale.detach()).icdf(q)
        return empirical_quantiles(self._summary_samples(*args, **kwargs), q)

    def _summary_samples(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Draw :attr:`num_summary_samples` latents from :attr:`summary_seed` on a
        fork of the random state: training is not perturbed, and a summary is a
        function of the parameters alone (the same after save and load)."""
        posterior = self.get_posterior(*args, **kwargs)
        device = self._device()
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.summary_seed)
            return posterior.sample((int(self.num_summary_samples),)).detach()

    def _device(self) -> torch.device:
        for _, value in self.named_parameters():
            return value.device
        for _, value in self.named_buffers():
            return value.device
        return torch.get_default_device()

    def _median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if self._has_loc_scale():
            latent = self._loc_scale(*args, **kwargs)[0].detach()
        else:
            half = torch.tensor([0.5])
            latent = self._latent_quantiles(half, *args, **kwargs)[0]
        return self._layout.constrain(self._layout.unpack_stacked(latent))

    def _quantiles(
        self, q: torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        latent = self._latent_quantiles(q, *args, **kwargs)
        return self._layout.constrain(self._layout.unpack_stacked(latent))
