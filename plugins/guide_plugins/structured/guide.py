"""``AutoStructured``: per-site conditionals sheared by dependencies between sites."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.transforms import SoftplusLowerCholeskyTransform
from pyro.nn.module import PyroModule, PyroParam
from torch.nn.functional import softplus

from guide_core import AutoGuide, init_to_feasible
from guide_core.plugin import (
    SiteFacts,
    constrain,
    get_nested,
    infer_dependencies,
    param_with_leaf,
    set_nested,
    topological_order,
    validate_init_scale,
)

from .spec import check_conditionals, check_dependencies, per_site

__all__ = ["AutoStructured"]


def _mark_auxiliary(msg: dict) -> dict:
    return {"is_auxiliary": True}


class AutoStructured(AutoGuide):
    """A structured guide: a conditional per site, sheared by upstream sites.

    Each latent site ``x`` is flattened in the unconstrained space to
    ``locs.x + noise_x``. Its own noise comes from its *conditional*: none
    (``"delta"``), an independent Normal (``"normal"``), a full-covariance
    Normal (``"mvn"``, parametrized by ``scales.x`` and ``scale_trils.x``), or
    a user callable returning zero-mean noise. Then every upstream site ``u``
    that ``x`` depends on adds ``deps.x.u(noise_u)`` -- a linear map
    (``"linear"``, a bias-free :class:`torch.nn.Linear` initialised at zero) or
    a callable. Shears have unit Jacobian, so the density stays exact.

    Once trained, the guide preconditions a model for HMC/NUTS through
    :class:`~guide_plugins.structured.StructuredReparam`. A high-dimensional
    site depending on a low-dimensional one may want a smaller learning rate
    for that weight: its param name contains ``deps.<downstream>.<upstream>``.

    Parameters
    ----------
    model : callable
        A Pyro model.
    conditionals : str, callable or dict
        One conditional type for every site, or ``{site: type}`` for each;
        a type is ``"delta"``, ``"normal"``, ``"mvn"`` or a callable.
    dependencies : str, callable or dict
        One dependency type (``"linear"`` or a callable), the edges then being
        inferred from the model's posterior dependencies; or the graph itself,
        ``{downstream: {upstream: type}}``, without cycles or self-loops.
    init_loc_fn : callable
        Per-site initialization strategy (an ``init_to_*``).
    init_scale : float
        Initial scale of each unconstrained site (> 0).
    create_plates : callable, optional
        Returns the plates to use for data subsampling; see :class:`AutoGuide`.
        Latent sites themselves may not sit in a subsampled plate.
    """

    scale_constraint = constraints.softplus_positive
    scale_tril_constraint = constraints.softplus_lower_cholesky

    def __init__(
        self,
        model: Callable,
        *,
        conditionals: str | Callable | dict[str, str | Callable] = "mvn",
        dependencies: str | Callable | dict[str, dict[str, str | Callable]] = "linear",
        init_loc_fn: Callable = init_to_feasible,
        init_scale: float = 0.1,
        create_plates: Callable | None = None,
    ):
        check_conditionals(conditionals)
        check_dependencies(dependencies)
        self.conditionals = conditionals
        self.dependencies = dependencies
        self.init_loc_fn = init_loc_fn
        self._init_scale = validate_init_scale(init_scale)
        self._original_model = (model,)
        super().__init__(
            self._wrap_init(model, init_loc_fn), create_plates=create_plates
        )

    # -- setup -----------------------------------------------------------------

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        sites = self._prototype.continuous()
        self._check_not_subsampled(sites)
        names = list(sites)
        self.conditionals = per_site(self.conditionals, names)
        if not isinstance(self.dependencies, Mapping):
            model = self._original_model[0]
            self.dependencies = infer_dependencies(
                model, args, kwargs, names, self.dependencies
            )
        self.dependencies = {k: dict(v) for k, v in self.dependencies.items()}
        self._original_model = None  # not needed any more (and may not pickle)
        order = topological_order(names, self.dependencies)

        self.locs = PyroModule()
        self.scales = PyroModule()
        self.scale_trils = PyroModule()
        self.conds = PyroModule()
        self.deps = PyroModule()
        self._batch_shapes: dict[str, torch.Size] = {}
        self._event_shapes: dict[str, torch.Size] = {}
        numel = {name: site.unconstrained_value.numel() for name, site in sites.items()}
        for name, site in sites.items():
            init_loc = site.require_unconstrained().reshape(-1)
            batch_shape = site.fn.batch_shape
            self._batch_shapes[name] = batch_shape
            self._event_shapes[name] = site.unconstrained_value.shape[
                len(batch_shape) :
            ]
            set_nested(self.locs, name, PyroParam(init_loc))
            self._setup_conditional(name, init_loc)
            edges = PyroModule()
            set_nested(self.deps, name, edges)
            for upstream, kind in self.dependencies.get(name, {}).items():
                if isinstance(kind, str):  # "linear", as checked in __init__
                    kind = torch.nn.Linear(
                        numel[upstream],
                        numel[name],
                        bias=False,
                        dtype=init_loc.dtype,
                        device=init_loc.device,
                    )
                    kind.weight.data.zero_()
                set_nested(edges, upstream, kind)
        self._sorted_sites = [(name, sites[name]) for name in order]

    def _check_not_subsampled(self, sites: Mapping[str, SiteFacts]) -> None:
        for name, site in sites.items():
            for plate in site.plates:
                if plate.subsampled:
                    raise NotImplementedError(
                        f"latent site {name!r} sits in the subsampled plate "
                        f"{plate.name!r}; AutoStructured couples every element of a "
                        "site, so it cannot subsample it. Subsample only the "
                        "observed sites, or guide the local sites with AutoNormal "
                        f"in an AutoGuideList (poutine.block(model, hide=[{name!r}]) "
                        "for this guide)"
                    )

    def _setup_conditional(self, name: str, init_loc: torch.Tensor) -> None:
        kind = self.conditionals[name]
        if callable(kind):
            set_nested(self.conds, name, kind)
            return
        if kind in ("normal", "mvn"):
            scale = torch.full_like(init_loc, self._init_scale)
            set_nested(self.scales, name, PyroParam(scale, self.scale_constraint))
        if kind == "mvn":
            n = init_loc.numel()
            eye = torch.eye(n, dtype=init_loc.dtype, device=init_loc.device)
            set_nested(
                self.scale_trils, name, PyroParam(eye, self.scale_tril_constraint)
            )

    # -- sampling --------------------------------------------------------------

    def _own_noise(self, name: str, zero: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Draw the site's own zero-mean noise; return it and its log-det term."""
        kind = self.conditionals[name]
        compute_density = poutine.get_mask() is not False
        if callable(kind):
            return get_nested(self.conds, name)(), 0.0
        if kind == "delta":
            return zero, 0.0
        white = pyro.sample(
            f"{name}_aux",
            dist.Normal(zero, 1).to_event(1),
            infer={"is_auxiliary": True},
        )
        scale = get_nested(self.scales, name)
        if kind == "normal":
            noise, log_det = white * scale, -scale.log() if compute_density else 0.0
        else:  # "mvn": over-parametrized by a global scale times a scale_tril
            lower, diag = self._cholesky_parts(name)  # strict when diag is given
            noise = white @ lower.T
            noise = (noise if diag is None else noise + white * diag) * scale
            log_det = 0.0
            if compute_density:
                if diag is None:
                    diag = lower.diagonal(dim1=-2, dim2=-1)
                log_det = -diag.log() - scale.log()
        if compute_density:
            log_det = log_det.expand_as(noise)
        return noise, log_det

    def _cholesky_parts(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The site's Cholesky factor as (strict lower triangle, its diagonal).

        Made from the free tensor when the param statement just made the factor
        from it by the softplus transform: the factor's D x D assembly and the
        gradient's disassembly are skipped (same values to rounding). Else
        (a handler supplied the value) ``(factor, None)``: use it whole.
        """
        scale_tril, free, transform = param_with_leaf(self.scale_trils, name)
        if free is None or transform != SoftplusLowerCholeskyTransform():
            return scale_tril, None
        return free.tril(-1), softplus(free.diagonal(dim1=-2, dim2=-1))

    def get_deltas(
        self, save_params: Collection[str] | None = None, *, stacked: bool = False
    ) -> dict[str, dist.Delta]:
        """Draw every site (or those in ``save_params``) as a point mass.

        Every sample site drawn here is auxiliary. Each point mass carries the
        log-density of the site's value under the guide, less the density of
        the auxiliary noise it was drawn from.

        Parameters
        ----------
        save_params : collection of str, optional
            Only return these sites (the noise of the sites they depend on is
            drawn too).
        stacked : bool
            How to read batch dims of the auxiliary noise (all but its last
            dim). By default they come from plates outside the model's (such
            as vectorized particles, ``Predictive(parallel=True)`` or a user's
            ``plate_stack``): they sit left of the site's plates, so the value
            has shape ``broadcast(noise batch, site batch) + event``. With
            ``stacked=True`` they are a plain stack of draws (e.g. MCMC
            samples of the noise), put in front of the site's full shape.

        Returns
        -------
        dict
            ``{site name: Delta}`` in the guide's sampling order.
        """
        with poutine.infer_config(config_fn=_mark_auxiliary):
            return self._get_deltas(save_params, stacked)

    def _lead_shape(self, name: str, noise: torch.Tensor, stacked: bool) -> torch.Size:
        """The dims to put left of site ``name``'s batch shape for this noise.

        Outer batch dims of the noise are aligned with the model's plates from
        the right: where the site has batch dims they must be 1, and only the
        dims further left lead the value. Reshaping without this would put
        the outer dims left of the site's plates *as well as* inside them.
        """
        outer = noise.shape[:-1]
        if stacked:
            return outer
        batch_shape = self._batch_shapes[name]
        cut = max(len(outer) - len(batch_shape), 0)
        if any(size != 1 for size in outer[cut:]):
            raise ValueError(
                f"AutoStructured: the noise of site {name!r} has outer batch shape "
                f"{tuple(outer)}, which overlaps the site's own batch shape "
                f"{tuple(batch_shape)}; outer batch dims (particles, Predictive, "
                "your plates) must lie left of the model's plates: raise "
                "max_plate_nesting, or put your plate at a dim further left"
            )
        return outer[:cut]

    def _with_upstreams(self, save_params: Collection[str] | None) -> set[str]:
        """The sites in ``save_params`` and every site they depend on."""
        if save_params is None:
            return {name for name, _ in self._sorted_sites}
        needed, pending = set(), list(save_params)
        while pending:
            name = pending.pop()
            if name not in needed:
                needed.add(name)
                pending.extend(self.dependencies.get(name, {}))
        return needed

    def _get_deltas(
        self, save_params: Collection[str] | None, stacked: bool
    ) -> dict[str, dist.Delta]:
        deltas: dict[str, dist.Delta] = {}
        noises: dict[str, torch.Tensor] = {}
        needed = self._with_upstreams(save_params)
        for name, site in self._sorted_sites:
            if name not in needed:
                continue
            loc = get_nested(self.locs, name)
            noise, log_density = self._own_noise(name, torch.zeros_like(loc))
            # Shear by the upstream noise (before this site's own noise is
            # recorded): a block-sparse precision, and a unit Jacobian.
            edges = get_nested(self.deps, name)
            for upstream in self.dependencies.get(name, {}):
                noise = noise + get_nested(edges, upstream)(noises[upstream])
            noises[name] = noise
            if save_params is not None and name not in save_params:
                continue  # only an upstream of a site asked for

            batch = self._lead_shape(name, noise, stacked) + self._batch_shapes[name]
            u = (noise + loc).reshape(batch + self._event_shapes[name])
            if isinstance(log_density, torch.Tensor):
                log_density = log_density.reshape(batch + (-1,)).sum(-1)
            point_mass = self.conditionals[name] == "delta"
            value, log_density = constrain(site, u, log_density, log_det=not point_mass)
            deltas[name] = dist.Delta(value, log_density, site.event_dim)
        return deltas

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Sample every latent site; return ``{site name: value}``."""
        self._ensure_setup(*args, **kwargs)
        deltas = self.get_deltas()
        self._create_plates(*args, **kwargs)
        result = {}
        for name, site in self._sorted_sites:
            with self._site_plates(site):
                result[name] = pyro.sample(name, deltas[name])
        return result

    # -- summaries -------------------------------------------------------------

    def _loc(self, name: str) -> torch.Tensor:
        shape = self._batch_shapes[name] + self._event_shapes[name]
        return get_nested(self.locs, name).detach().reshape(shape)

    def _median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return self._constrain(
            {name: self._loc(name) for name, _ in self._sorted_sites}
        )

    def _quantiles(
        self, q: torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        from .marginals import marginal_scales

        stds = marginal_scales(self)
        z = dist.Normal(0.0, 1.0).icdf(q)
        values = {}
        for name, _ in self._sorted_sites:
            loc = self._loc(name)
            std = stds[name].reshape(loc.shape)
            levels = z.to(loc).reshape((-1,) + (1,) * loc.dim())
            values[name] = torch.where(std > 0, loc + std * levels, loc)
        return self._constrain(values)
