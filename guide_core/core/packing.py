"""One flat unconstrained vector for all latent sites: packing and unpacking.

Guides that put a single joint distribution over every latent site (the
``AutoContinuous`` family, flows, joint Gaussians) work with one flat vector
that concatenates the unconstrained values of the sites in model order. A
:class:`LatentLayout`, built once from the prototype's :class:`SiteFacts`,
records where each site lives in that vector and converts between the vector
and per-site values, so the slicing rules (and the errors for models it cannot
handle) are written once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import pyro
import torch

from .latent import GuideDelta, constrain
from .prototype import SiteFacts

__all__ = ["LatentLayout", "LatentSlot", "check_not_subsampled", "empirical_quantiles"]


@attrs.frozen(eq=False)
class LatentSlot:
    """Where one site's unconstrained value lives in the flat latent vector.

    Attributes
    ----------
    site : SiteFacts
        The site.
    start, stop : int
        Its slice ``[start, stop)`` of the last dimension of the vector.
    shape : torch.Size
        The shape of its unconstrained value (as in the prototype run).
    event_dim : int
        The event dim of its unconstrained value.
    """

    site: SiteFacts
    start: int
    stop: int
    shape: torch.Size
    event_dim: int

    @property
    def name(self) -> str:
        """The site's name."""
        return self.site.name


def check_not_subsampled(owner: str, site: SiteFacts) -> None:
    """Refuse a latent site in a subsampled plate, for a guide (``owner``, its
    class name) whose parameters cover every element of a site at once.

    Raises
    ------
    ValueError
        Naming the site, the plate and its sizes, and how to guide the site
        instead (an :class:`~guide_core.AutoGuideList` with a guide that
        subsamples, or the plate at full size).
    """
    for plate in site.plates:
        if plate.subsampled:
            raise ValueError(
                f"{owner} cannot guide site {site.name!r}: it is a local latent in "
                f"the subsampled plate {plate.name!r} (subsample size {plate.size} "
                f"of {plate.full_size}), so the dimension of the flat latent would "
                "change from step to step. Guide the local sites with a guide that "
                "supports subsampling, e.g. AutoGuideList with "
                f"AutoNormal(poutine.block(model, expose=[{site.name!r}])) and "
                f"{owner}(poutine.block(model, hide=[{site.name!r}])), or run plate "
                f"{plate.name!r} at full size"
            )


@attrs.frozen(eq=False)
class LatentLayout:
    """The layout of every latent site in one flat unconstrained vector.

    Attributes
    ----------
    slots : tuple of LatentSlot
        One per site, in model order.
    dim : int
        The length of the flat vector (Pyro's ``latent_dim``).
    """

    slots: tuple[LatentSlot, ...]
    dim: int

    @classmethod
    def from_sites(
        cls, sites: Mapping[str, SiteFacts], owner: str = "this guide"
    ) -> LatentLayout:
        """Lay out ``sites`` in order; ``owner`` names the guide in errors.

        Raises
        ------
        ValueError
            A site is discrete, has no bijection to its support, or is a local
            latent of a subsampled plate (the error names the plate).
        """
        slots, pos = [], 0
        for site in sites.values():
            site.require_transform()  # the helpful error for discrete sites
            check_not_subsampled(owner, site)
            shape = site.unconstrained_value.shape
            size = math.prod(shape)
            event_dim = site.unconstrained_event_dim
            slots.append(LatentSlot(site, pos, pos + size, shape, event_dim))
            pos += size
        return cls(tuple(slots), pos)

    def __iter__(self) -> Iterator[LatentSlot]:
        return iter(self.slots)

    @property
    def names(self) -> list[str]:
        """The site names, in order."""
        return [slot.name for slot in self.slots]

    def sites_at(self, indices: Sequence[int]) -> list[str]:
        """Return the names of the sites owning the given flat indices, in order."""
        wanted = set(int(i) for i in indices)
        return [
            s.name for s in self.slots if any(s.start <= i < s.stop for i in wanted)
        ]

    # -- vector <-> sites -------------------------------------------------------

    def init_latent(self) -> torch.Tensor:
        """The flat vector of every site's unconstrained initial value."""
        parts = [slot.site.require_unconstrained().reshape(-1) for slot in self.slots]
        return torch.cat(parts)

    def pack(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate per-site unconstrained values (no batch dims) into a vector."""
        return torch.cat([values[slot.name].reshape(-1) for slot in self.slots])

    def unpack(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector into per-site unconstrained values, aligned to plates.

        The batch dims of ``latent`` (all but the last) must sit left of the
        model's plates (size-1 dims where the plates are), as when the latent is
        sampled inside plates such as vectorized particles; each site's value
        then has the batch dims broadcast against its own shape.
        """
        batch = latent.shape[:-1]
        out = {}
        for slot in self.slots:
            shape = torch.broadcast_shapes(slot.shape, batch + (1,) * slot.event_dim)
            out[slot.name] = latent[..., slot.start : slot.stop].reshape(shape)
        return out

    def unpack_stacked(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector whose leading dims are a stack (e.g. of samples or
        quantile levels): each site gets ``latent.shape[:-1] + its shape``."""
        batch = latent.shape[:-1]
        return {
            s.name: latent[..., s.start : s.stop].reshape(batch + s.shape)
            for s in self.slots
        }

    def constrain(self, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map per-site unconstrained values to each site's support."""
        return {
            s.name: s.site.require_transform()(values[s.name])
            for s in self.slots
            if s.name in values
        }

    def emit(
        self, latent: torch.Tensor, site_plates: Callable[[SiteFacts], Any]
    ) -> dict[str, torch.Tensor]:
        """Sample every site from the flat draw ``latent``, inside its plates.

        This is the one place a flat-latent guide hands the model its values:
        each site becomes a point mass at its constrained value carrying the
        log-det of its bijection (see :func:`guide_core.latent.constrain`).
        ``site_plates(site)`` returns the context that enters the site's plates.
        Returns ``{site name: constrained value}``.
        """
        values, result = self.unpack(latent), {}
        for slot in self.slots:
            site, u = slot.site, values[slot.name]
            with site_plates(site):
                value, log_density = constrain(site, u)
                point = GuideDelta(
                    value, log_density, event_dim=site.event_dim, unconstrained=u
                )
                result[slot.name] = pyro.sample(slot.name, point)
        return result


def empirical_quantiles(samples: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Elementwise quantiles of ``samples`` along dim 0, linearly interpolated.

    Works for any number of elements (``torch.quantile`` has a size limit).
    Returns a tensor of shape ``(len(q),) + samples.shape[1:]``.
    """
    n = samples.shape[0]
    ordered = samples.sort(dim=0).values
    pos = q.to(samples) * (n - 1)
    lo = pos.floor().long().clamp(0, n - 1)
    hi = pos.ceil().long().clamp(0, n - 1)
    frac = (pos - lo.to(pos)).reshape((-1,) + (1,) * (samples.dim() - 1))
    return ordered[lo] + frac * (ordered[hi] - ordered[lo])
