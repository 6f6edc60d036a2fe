"""A Gaussian to start a guide from: the mode and curvature of the posterior.

``guide_core.fit`` finds one with Pathfinder and hands it to a Gaussian guide
through :meth:`~guide_core.AutoGuide.warm_start`, so the guide starts at the
posterior's location, with its scales (and correlations, where the family has
them), instead of at a prior median with scale 0.1.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch
from torch.distributions import Transform

__all__ = [
    "GaussianStart",
    "Whitening",
    "location_steps",
    "mean_field_scale",
    "row_step_bounds",
    "scale_steps",
    "site_transforms",
]

#: Largest location for which steps are whitened by a dense factor.
WHITEN_MAX_DIM = 2000


@attrs.frozen(eq=False)
class GaussianStart:
    """A Gaussian over the unconstrained latent sites of a model.

    Attributes
    ----------
    slices : Mapping[str, tuple[int, int, torch.Size]]
        For each site, its ``(start, stop)`` in the flat vector and its
        unconstrained shape.
    loc : torch.Tensor
        ``(D,)`` the mean.
    covariance : torch.Tensor
        ``(D, D)`` the covariance.
    transforms : Mapping[str, Transform] or None
        Each site's bijection from these unconstrained coordinates to its
        support; ``None``: the coordinates of the guide being started.
    """

    slices: Mapping[str, tuple[int, int, torch.Size]]
    loc: torch.Tensor
    covariance: torch.Tensor
    transforms: Mapping[str, Transform] | None = None

    def in_transforms(self, transforms: Mapping[str, Transform]) -> GaussianStart:
        """This Gaussian in the unconstrained coordinates of other transforms.

        A support that depends on another site (``beta ~ Uniform(0, 1 -
        alpha)``) is fixed when a guide traces its prototype, so two guides
        of one model can map the same site through different bijections. A
        site whose ``transforms`` differ from :attr:`transforms` is mapped
        through the constrained space: the location exactly, the covariance
        by the Jacobian there (the delta method).

        Parameters
        ----------
        transforms : mapping of str to Transform
            Site name to the bijection from unconstrained to constrained.
        """
        if self.transforms is None:
            return self
        loc, jacobian = self.loc.clone(), None
        for name, (start, stop, shape) in self.slices.items():
            old, new = self.transforms.get(name), transforms.get(name)
            if old is None or new is None:
                continue

            def remap(x, old=old, new=new, shape=shape):
                return new.inv(old(x.reshape(shape))).reshape(-1)

            block = self.loc[start:stop]
            probe = torch.stack([block, block + 1])
            if torch.allclose(torch.stack([remap(x) for x in probe]), probe):
                continue
            with torch.enable_grad():
                local = torch.autograd.functional.jacobian(remap, block)
            if jacobian is None:
                jacobian = torch.eye(loc.shape[0], dtype=loc.dtype, device=loc.device)
            loc[start:stop] = remap(block)
            jacobian[start:stop, start:stop] = local
        if jacobian is None:
            return attrs.evolve(self, transforms=dict(transforms))
        covariance = jacobian @ self.covariance @ jacobian.T
        return GaussianStart(self.slices, loc, covariance, dict(transforms))

    @property
    def sd(self) -> torch.Tensor:
        """``(D,)`` the marginal standard deviations."""
        return self.covariance.diagonal().clamp_min(0).sqrt()

    def site_loc(self, name: str) -> torch.Tensor:
        """The mean of one site, in its unconstrained shape."""
        start, stop, shape = self.slices[name]
        return self.loc[start:stop].reshape(shape)

    def site_sd(self, name: str) -> torch.Tensor:
        """The marginal standard deviations of one site, shaped like it."""
        start, stop, shape = self.slices[name]
        return self.sd[start:stop].reshape(shape)

    def reorder(
        self, names_and_sizes: list[tuple[str, int]]
    ) -> tuple[torch.Tensor, ...]:
        """``(loc, covariance)`` in another flat order of the same sites.

        Raises
        ------
        KeyError
            A site the start does not cover, or whose size differs.
        """
        index = []
        for name, size in names_and_sizes:
            if name not in self.slices:
                raise KeyError(f"the Gaussian start has no site {name!r}")
            start, stop, _ = self.slices[name]
            if stop - start != size:
                raise KeyError(
                    f"site {name!r} has {size} unconstrained values here but "
                    f"{stop - start} in the Gaussian start"
                )
            index.extend(range(start, stop))
        idx = torch.tensor(index, dtype=torch.long, device=self.loc.device)
        return self.loc[idx], self.covariance[idx][:, idx]


def site_transforms(sites: Mapping) -> dict[str, Transform]:
    """Each site's bijection from its prototype (sites without one left out),
    for :meth:`GaussianStart.in_transforms`."""
    out = {}
    for name, site in sites.items():
        try:
            out[name] = site.require_transform()
        except Exception:  # noqa: BLE001 - e.g. a discrete site: nothing to map
            continue
    return out


def row_step_bounds(
    covariance: torch.Tensor, row_scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on the steps of a factored covariance's parameters, so that one
    step moves the Gaussian by at most one posterior sd, whitened.

    A covariance factored by rows, ``row i = row_scale[i] * (...)`` (the
    Cholesky factor ``diag(scale) @ unit``, or ``diag(scale) [I, F]``), is
    changed in row ``i`` by a step on ``scale[i]`` or on the entries of row
    ``i``; whitening divides that change by the conditional sd of coordinate
    ``i`` given all others, far below its marginal sd on a ridge.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(D,)`` the factor on a scale's relative step (conditional over
        marginal sd) and ``(D,)`` the step of an entry of row ``i``
        (conditional sd over ``row_scale[i]``), each at most 1.
    """
    d = covariance.shape[-1]
    start = GaussianStart({"": (0, d, torch.Size([d]))}, covariance[0], covariance)
    conditional = mean_field_scale(start)
    narrow = (conditional / covariance.diagonal().sqrt()).clamp(max=1.0)
    return narrow, (conditional / row_scale).clamp(max=1.0)


def mean_field_scale(start: GaussianStart) -> torch.Tensor:
    """``(D,)`` the sds of the best mean-field fit to the start's Gaussian:
    ``1 / sqrt(diag(precision))``, the conditional sds."""
    precision = torch.linalg.inv(start.covariance)
    return precision.diagonal().clamp_min(torch.finfo(precision.dtype).tiny).rsqrt()


def scale_steps(scale: torch.Tensor) -> torch.Tensor:
    """The natural step of a positive scale in its unconstrained (softplus or
    log) space: relative below 1, where that space is a log; absolute above."""
    return scale.clamp_min(1.0)


@attrs.frozen(eq=False)
class Whitening:
    """The natural steps of a flat location as a matrix: the lower Cholesky
    factor ``L`` of the posterior covariance.

    Steps taken in the whitened coordinates ``u`` of ``loc = loc0 + L u`` are
    posterior sds along every direction at once, so a location on a ridge of
    correlation 0.9999 moves along it as fast as across it, which no
    element-wise step size can do.

    Attributes
    ----------
    factor : torch.Tensor
        ``(D, D)`` lower triangular, positive diagonal.
    """

    factor: torch.Tensor

    def detach(self) -> Whitening:
        """This whitening, out of any autograd graph."""
        return Whitening(self.factor.detach())

    def to(self, like: torch.Tensor) -> Whitening:
        """This whitening in ``like``'s dtype and device."""
        return Whitening(self.factor.to(like))

    def whiten(self, delta: torch.Tensor) -> torch.Tensor:
        """``L^{-1} delta``: a change of the location in posterior sds."""
        solved = torch.linalg.solve_triangular(
            self.factor, delta.reshape(-1, 1), upper=False
        )
        return solved.reshape(delta.shape)


def location_steps(covariance: torch.Tensor) -> torch.Tensor | Whitening:
    """The natural steps of a flat location with this posterior covariance:
    a :class:`Whitening` up to :data:`WHITEN_MAX_DIM` coordinates (where the
    covariance factors), else the marginal sds, element-wise."""
    if covariance.shape[-1] <= WHITEN_MAX_DIM:
        factor, info = torch.linalg.cholesky_ex(covariance)
        if int(info) == 0:
            return Whitening(factor)
    return covariance.diagonal().clamp_min(0).sqrt()
