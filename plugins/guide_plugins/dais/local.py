"""The local latents of one subsampled plate, one flat vector per element.

:class:`AutoSemiDAIS` runs an independent trajectory for each element ``i``
of the plate, on the vector ``z_i`` that concatenates the unconstrained
values of every local site at index ``i``. A :class:`LocalLayout`, made once
from the prototype, converts between per-site values (the plate at its own
batch dim) and the ``(M, D)`` matrix of the ``M`` elements of a subsample,
and evaluates a conditioned run of a local program (the local model, or a
local guide) as one log density per element.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from pyro import poutine
from pyro.distributions.util import sum_rightmost
from pyro.poutine.util import site_is_subsample

from guide_core.plugin import PlateFacts, SiteFacts

__all__ = ["LocalLayout", "LocalSlot", "local_trace"]


def _expose_params(msg: dict) -> bool:
    """Hide all but param sites: an inner run's params still reach ``SVI``."""
    return msg["type"] != "param"


def local_trace(
    fn: Callable, args: tuple, kwargs: Mapping[str, Any], data: Mapping[str, Any]
) -> Any:
    """Trace ``fn`` conditioned on ``data``, hidden from outer handlers (but for
    its params, so that an optimizer sees them)."""
    with poutine.block(hide_fn=_expose_params):
        conditioned = poutine.condition(fn, data=dict(data))
        return poutine.trace(conditioned).get_trace(*args, **kwargs)


def per_element(t: torch.Tensor, plate_dim: int, size: int) -> torch.Tensor:
    """Sum a batch-shaped tensor over every dim but the plate's (``(size,)``)."""
    t = torch.as_tensor(t)
    while t.dim() < -plate_dim:
        t = t.unsqueeze(0)
    t = t.movedim(plate_dim, 0)
    return t.reshape(t.shape[0], -1).sum(-1).expand(size)


@attrs.frozen(eq=False)
class LocalSlot:
    """Where one local site lives in each element's vector.

    Attributes
    ----------
    site : SiteFacts
    start, stop : int
        Its slice of the element's vector.
    axis : int
        The (negative) dim of the plate in the site's unconstrained value.
    rest : torch.Size
        The shape of one element's unconstrained value (the plate dim removed).
    """

    site: SiteFacts
    start: int
    stop: int
    axis: int
    rest: torch.Size

    @property
    def name(self) -> str:
        """The site's name."""
        return self.site.name


@attrs.frozen(eq=False)
class LocalLayout:
    """The local sites of ``plate`` and the per-element vector of length ``dim``."""

    plate: PlateFacts
    slots: tuple[LocalSlot, ...]
    dim: int

    @classmethod
    def from_sites(cls, plate: PlateFacts, sites: list[SiteFacts]) -> LocalLayout:
        """Lay out ``sites`` (all in ``plate``) in order."""
        slots, pos = [], 0
        for site in sites:
            u = site.require_unconstrained()
            axis = plate.dim - site.unconstrained_event_dim
            rest = list(u.shape)
            del rest[axis]
            size = math.prod(rest)
            slots.append(LocalSlot(site, pos, pos + size, axis, torch.Size(rest)))
            pos += size
        return cls(plate, tuple(slots), pos)

    @property
    def names(self) -> list[str]:
        """The local site names, in order."""
        return [s.name for s in self.slots]

    def pack(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Per-site unconstrained values -> the ``(M, D)`` matrix."""
        parts = []
        for s in self.slots:
            u = values[s.name].movedim(s.axis, 0)
            parts.append(u.reshape(u.shape[0], -1))
        return torch.cat(parts, -1)

    def unpack(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ``(..., M, D)`` matrix -> per-site unconstrained values, with any
        leading dims of ``z`` (a stack of draws) kept leftmost."""
        lead = z.shape[:-2]
        out = {}
        for s in self.slots:
            u = z[..., s.start : s.stop].reshape(lead + z.shape[-2:-1] + s.rest)
            out[s.name] = u.movedim(len(lead), s.axis)
        return out

    def constrain(
        self, z: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Constrained per-site values of ``z`` (``(M, D)``) and, per element, the
        log-det of the map from the unconstrained space (``(M,)``)."""
        size, log_det = z.shape[-2], z.new_zeros(z.shape[-2])
        values, unpacked = {}, self.unpack(z)
        for s in self.slots:
            u = unpacked[s.name]
            transform = s.site.require_transform()
            value = transform(u)
            values[s.name] = value
            if value is not u:
                ladj = transform.log_abs_det_jacobian(u, value)
                ladj = sum_rightmost(ladj, ladj.dim() - value.dim() + s.site.event_dim)
                log_det = log_det + per_element(ladj, self.plate.dim, size)
        return values, log_det

    def log_density(
        self,
        fn: Callable,
        z: torch.Tensor,
        idx: torch.Tensor,
        args: tuple,
        kwargs: Mapping[str, Any],
    ) -> torch.Tensor:
        """``log fn(z_i)`` in the unconstrained space for each element (``(M,)``):
        ``fn`` run conditioned on the constrained values and the plate's indices,
        each site's log density unscaled by the subsample."""
        values, log_det = self.constrain(z)
        trace = local_trace(fn, args, kwargs, {**values, self.plate.name: idx})
        return log_det + trace_per_element(trace, self.plate, z.shape[-2])

    def guide_start(
        self,
        guide: Callable,
        idx: torch.Tensor,
        args: tuple,
        kwargs: Mapping[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """Start the trajectories from a draw of a local ``guide``: return
        ``z_0`` (``(M, D)``), its log density per element (unconstrained) and
        the guide's log density (summed) as a function of ``z``."""
        trace = local_trace(guide, args, kwargs, {self.plate.name: idx})
        missing = [n for n in self.names if n not in trace.nodes]
        if missing:
            raise ValueError(f"local_guide does not sample the local site(s) {missing}")
        z_0 = self.pack(
            {
                s.name: s.site.require_transform().inv(trace.nodes[s.name]["value"])
                for s in self.slots
            }
        )
        log_q0 = self.constrain(z_0)[1] + trace_per_element(trace, self.plate, len(idx))

        def log_q(z: torch.Tensor) -> torch.Tensor:
            return self.log_density(guide, z, idx, args, kwargs).sum()

        return z_0, log_q0, log_q


def trace_per_element(trace: Any, plate: PlateFacts, size: int) -> torch.Tensor:
    """The log density of a trace's sample sites per element of ``plate``."""
    total = None
    for site in trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        lp = site["fn"].log_prob(site["value"])
        if site["mask"] is not None:
            lp = torch.where(site["mask"], lp, lp.new_zeros(()))
        lp = per_element(lp, plate.dim, size)
        total = lp if total is None else total + lp
    if total is None:
        raise ValueError(
            f"the local program has no sample sites in plate {plate.name!r}"
        )
    return total
