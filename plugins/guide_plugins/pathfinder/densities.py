"""The log joint density of a flat-latent guide's model at given draws.

Pathfinder evaluates ``log p(x, z) + log |det J|`` at flat unconstrained
points: one at a time with a gradient along the L-BFGS path, and in batches
for its ELBO and importance draws. The guide is run as a point mass at the
points (its ``get_posterior`` returns a ``Delta`` while ``_point`` is set),
so the log-dets and plates are exactly those of its own draws, and the model
is replayed against it.

Where the model raises a numerical error at a point (a covariance that is
not positive definite at an extreme length scale, a distribution's check on
an overflowed parameter), the density there is taken as ``-inf``, as Stan
rejects a proposal whose model block throws: L-BFGS's line search then steps
back, and such ELBO or importance draws get no weight.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from guide_core.plugin import unwrap_init

__all__ = ["DOMAIN_ERRORS", "DrawDensities"]

#: What a model raises where its density is numerically undefined.
DOMAIN_ERRORS = (torch.linalg.LinAlgError, ValueError)


class DrawDensities:
    """Mixin for an ``AutoContinuous`` whose ``get_posterior`` is a point mass
    at ``self._point`` while that is set."""

    _point: torch.Tensor | None = None
    _vectorizes: bool | None = None
    _maps: bool | None = None  # torch.func.vmap gives the one-by-one densities
    _plate_nesting: int | None = None
    #: The last numerical error a model raised at a point (for the notes).
    last_rejection: str | None = None

    def _traces(self, point: torch.Tensor, args: tuple, kwargs: dict) -> tuple:
        self._point = point
        try:
            guide_trace = poutine.trace(self).get_trace(*args, **kwargs)
        finally:
            self._point = None
        # the model without the guide's init handler: every latent is replayed
        replayed = poutine.replay(unwrap_init(self.model), trace=guide_trace)
        model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
        return model_trace, guide_trace

    def _log_density(self, z: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        """``log p(x, z) + log |det J|`` at one flat unconstrained ``z``."""
        model_trace, guide_trace = self._traces(z, args, kwargs)
        return model_trace.log_prob_sum() - guide_trace.log_prob_sum()

    def _log_density_or_reject(
        self, z: torch.Tensor, args: tuple, kwargs: dict
    ) -> torch.Tensor:
        """:meth:`_log_density`, or ``-inf`` (with a zero gradient) where the
        model raises one of :data:`DOMAIN_ERRORS` at ``z``."""
        try:
            return self._log_density(z, args, kwargs)
        except DOMAIN_ERRORS as exc:
            self.last_rejection = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return z.sum() * 0.0 - math.inf

    def _nesting(self, z: torch.Tensor, args: tuple, kwargs: dict) -> int:
        """The batch dims the model's plates use (observed sites included)."""
        if getattr(self, "_plate_nesting", None) is None:
            dims = [0]
            for trace in self._traces(z, args, kwargs):
                for node in trace.nodes.values():
                    for frame in node.get("cond_indep_stack", ()):
                        if frame.vectorized:
                            dims.append(-frame.dim)
            self._plate_nesting = max(dims)
        return self._plate_nesting

    def _log_densities(
        self, zs: torch.Tensor, args: tuple, kwargs: dict
    ) -> torch.Tensor:
        """Log densities at the rows of ``zs``: vectorized under a plate when
        the model allows, else mapped over the rows by ``torch.func.vmap``
        (a model written for one draw, ``x @ coef``, maps without change),
        else one by one. Each way is checked once, on three rows, against
        one at a time, so a model that broadcasts its draws wrongly never
        runs a big batch."""
        if zs.shape[0] > 1 and self._vectorizes is None:
            probe = zs[:3]
            one_by_one = torch.stack(
                [self._log_density_or_reject(z, args, kwargs) for z in probe]
            )
            self._vectorizes = _agrees(
                self._vectorized, probe, one_by_one, args, kwargs
            )
            if not self._vectorizes:
                self._maps = _agrees(self._mapped, probe, one_by_one, args, kwargs)
        if zs.shape[0] > 1 and (self._vectorizes or self._maps):
            way = self._vectorized if self._vectorizes else self._mapped
            try:
                return way(zs, args, kwargs)
            except DOMAIN_ERRORS:  # some row is outside: find it one at a time
                pass
        return torch.stack([self._log_density_or_reject(z, args, kwargs) for z in zs])

    def _mapped(self, zs: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        with pyro.validation_enabled(False):  # its checks read values
            return torch.func.vmap(lambda z: self._log_density(z, args, kwargs))(zs)

    def _vectorized(self, zs: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        nesting = self._nesting(zs[0], args, kwargs)
        n = zs.shape[0]
        shaped = zs.reshape((n,) + (1,) * nesting + zs.shape[-1:])
        with pyro.plate("_pathfinder_draws", n, dim=-(nesting + 1)):
            model_trace, guide_trace = self._traces(shaped, args, kwargs)
        total = zs.new_zeros(n)
        for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
            trace.compute_log_prob()
            for site in trace.nodes.values():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                lp = site["log_prob"]
                if lp.dim() < nesting + 1:
                    raise ValueError("a site outside the draws' plate")
                lead = lp.shape[: lp.dim() - nesting]
                right = tuple(range(lp.dim() - nesting, lp.dim()))
                per = lp.sum(right) if right else lp  # sum(()) would sum all
                if lead.numel() not in (1, n):
                    raise ValueError("not vectorized")
                total = total + sign * per.reshape(-1).expand(n)
        return total


def _agrees(
    way, probe: torch.Tensor, want: torch.Tensor, args: tuple, kwargs: dict
) -> bool:
    """Whether ``way`` gives the one-by-one densities ``want`` on ``probe``."""
    try:
        got = way(probe, args, kwargs)
    except Exception:  # noqa: BLE001 - any failure: not this way
        return False
    return bool(torch.allclose(got, want, rtol=1e-6, atol=1e-6, equal_nan=True))
