"""The factor graph every AutoGaussian back end shares.

:func:`build_structure` reads the prototype (its facts, and its trace's latent
*and* observed sample sites) and the model's prior dependencies and returns a
:class:`GaussianStructure`: one :class:`Factor` per site whose density involves
a latent variable, with the plates it is batched over and the latent sites it
touches. Each factor owns a ``white_vec`` and a ``prec_sqrt`` parameter; the
joint Gaussian of the auxiliary latents has precision
``sum_f prec_sqrt_f @ prec_sqrt_f.T`` (scattered onto the latents it touches)
and information vector ``sum_f prec_sqrt_f @ white_vec_f``. The back ends differ
only in how they factorise that Gaussian.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import torch
from pyro.poutine.util import site_is_subsample

from guide_core import PlateFacts, Prototype, SiteFacts

__all__ = [
    "Factor",
    "GaussianStructure",
    "Latent",
    "build_structure",
    "plate_shape",
    "unflatten",
]


def plate_shape(plates: Iterable[PlateFacts], length: int | None = None) -> torch.Size:
    """Return the batch shape of a tensor batched over ``plates``.

    Each plate's size sits at its (negative) dim and every other dim is 1. The
    shape has ``length`` dims, or just enough for the innermost-left plate.
    """
    plates = list(plates)
    depth = max([0] + [-p.dim for p in plates])
    shape = [1] * (depth if length is None else max(length, depth))
    for p in plates:
        shape[p.dim] = p.size
    return torch.Size(shape)


def plate_names(plates: Iterable[PlateFacts]) -> str:
    """Return ``"{a, b}"`` for error messages (``"no plate"`` when empty)."""
    names = sorted(p.name for p in plates)
    return "{" + ", ".join(repr(n) for n in names) + "}" if names else "no plate"


@attrs.frozen
class Latent:
    """A latent site as the Gaussian sees it: its unconstrained event, flattened.

    Attributes
    ----------
    site : SiteFacts
        The core's facts about the site.
    plates : frozenset of PlateFacts
        The plates it is batched over.
    batch_shape : torch.Size
        Its prior's batch shape (equal to ``plate_shape(plates)``).
    event_shape : torch.Size
        The shape of one unconstrained event.
    """

    site: SiteFacts
    plates: frozenset[PlateFacts]
    batch_shape: torch.Size
    event_shape: torch.Size

    @property
    def name(self) -> str:
        return self.site.name

    @property
    def event_numel(self) -> int:
        """The number of unconstrained coordinates in one event."""
        return self.event_shape.numel()

    @property
    def numel(self) -> int:
        """The number of unconstrained coordinates over all plates."""
        return self.batch_shape.numel() * self.event_numel


@attrs.frozen
class Factor:
    """One factor of the guide's Gaussian: a site whose density touches latents.

    Attributes
    ----------
    name : str
        The site it comes from (latent or observed).
    observed : bool
        Whether that site is observed.
    plates : frozenset of PlateFacts
        Its batch plates; an observed site keeps only plates some upstream
        latent shares (the others are summed out).
    upstreams : tuple of str
        The latent sites it touches, in the model's dependency order.
    u_size : int
        Rows of its ``prec_sqrt``: the coordinates of its upstreams, with the
        plates of an upstream that this factor lacks folded into the event.
    d_size : int
        Columns of its ``prec_sqrt`` (the rank of its precision).
    """

    name: str
    observed: bool
    plates: frozenset[PlateFacts]
    upstreams: tuple[str, ...]
    u_size: int
    d_size: int

    @property
    def batch_shape(self) -> torch.Size:
        """The batch shape of its parameters."""
        return plate_shape(self.plates)


@attrs.frozen
class GaussianStructure:
    """The latents and factors of an AutoGaussian, in the model's order."""

    latents: Mapping[str, Latent]
    factors: Mapping[str, Factor]

    def max_plate_nesting(self) -> int:
        """How many batch dims the plates of the factors and latents use."""
        plates = [p for f in self.factors.values() for p in f.plates]
        plates += [p for v in self.latents.values() for p in v.plates]
        return max([0] + [-p.dim for p in plates])

    def broken_plates(self, factor: str, upstream: str) -> frozenset[PlateFacts]:
        """Plates of ``upstream`` that ``factor`` lacks (folded into its rows)."""
        return self.latents[upstream].plates - self.factors[factor].plates

    def rows(self, factor: str, upstream: str) -> int:
        """How many rows of ``factor``'s ``prec_sqrt`` belong to ``upstream``."""
        broken = plate_shape(self.broken_plates(factor, upstream)).numel()
        return self.latents[upstream].event_numel * broken


def build_structure(
    prototype: Prototype, dependencies: Mapping[str, Mapping[str, Any]]
) -> GaussianStructure:
    """Return the factor graph of a model.

    Parameters
    ----------
    prototype : Prototype
        The guide's prototype, its trace with observed sites kept. Plates and
        latent sites are read from its facts.
    dependencies : dict
        ``get_dependencies(model)["prior_dependencies"]``: for every site, the
        latent sites its density depends on (itself included).

    Raises
    ------
    ValueError
        A site's batch shape does not match its plates, or a latent site's
        support has no bijection (the message names the site and the fix).
    NotImplementedError
        An observed site sits in a sequential plate.
    """
    trace, sites = prototype.trace, prototype.sites
    latents: dict[str, Latent] = {}
    factors: dict[str, Factor] = {}
    for name, node in trace.nodes.items():
        if node["type"] != "sample" or site_is_subsample(node):
            continue
        if name not in dependencies:
            continue  # a masked observation or a Delta: not part of the graph
        observed = bool(node["is_observed"])
        ups = [u for u in dependencies[name] if u in latents or u == name]
        ups = [u for u in ups if not (observed and u == name)]
        if observed and not ups:
            continue  # an observation no latent influences
        plates = frozenset(prototype.plates_of(name))
        batch_shape = node["fn"].batch_shape
        if batch_shape != plate_shape(plates):
            raise ValueError(
                f"site {name!r} has batch shape {tuple(batch_shape)} but its plates "
                f"{plate_names(plates)} give {tuple(plate_shape(plates))}; are you "
                "missing a pyro.plate() or a .to_event()?"
            )
        if observed:
            shared = frozenset().union(*(latents[u].plates for u in ups))
            plates = plates & shared
        else:
            site = sites[name]
            site.require_transform()
            unconstrained = site.unconstrained_value
            event_shape = unconstrained.shape[len(batch_shape) :]
            latents[name] = Latent(site, plates, batch_shape, event_shape)
        factors[name] = Factor(name, observed, plates, tuple(ups), 0, 0)
    structure = GaussianStructure(latents, factors)
    sized = {}
    for name, node in trace.nodes.items():
        if name not in factors:
            continue
        factor = factors[name]
        u_size = sum(structure.rows(name, u) for u in factor.upstreams)
        if factor.observed:
            d_size = node["fn"].event_shape.numel()
            for p in frozenset(prototype.plates_of(name)) - factor.plates:
                d_size *= p.size
            d_size = min(d_size, u_size)
        else:
            d_size = latents[name].event_numel
        sized[name] = attrs.evolve(factor, u_size=u_size, d_size=d_size)
    return GaussianStructure(latents, sized)


def unflatten(
    flat: torch.Tensor, latents: Mapping[str, Latent]
) -> dict[str, torch.Tensor]:
    """Split flat aux vectors (sites in model order, each flattened batch-then-
    event) into ``{site: tensor}`` of shape ``batch + event_shape``.

    The leading dims of ``flat`` must be ones at the plate dims (as a draw
    under Pyro's particle plates is); they broadcast with each site's batch.
    """
    lead = flat.shape[:-1]
    out, pos = {}, 0
    for name, latent in latents.items():
        end = pos + latent.numel
        shape = torch.broadcast_shapes(lead, latent.batch_shape) + latent.event_shape
        out[name] = flat[..., pos:end].reshape(shape)
        pos = end
    return out
