"""The :class:`AutoGaussian` protocol: parameters, dispatch to a back end, sampling.

Implementing a back end
-----------------------
1. Subclass :class:`AutoGaussian` as ``AutoGaussian<Name>``; the parameters
   (``locs``, ``scales``, ``white_vecs``, ``prec_sqrts``) and the factor graph
   (``self._structure``) are made for you by ``_setup_prototype`` (extend it
   for your own indices, calling ``super()`` first).
2. Implement ``_sample_aux_values(temperature=...)``: with ``temperature=1``
   draw the auxiliary latents (one array per latent site, shaped like the
   site's unconstrained value) and add their joint log-density to the trace,
   under the auxiliary site ``f"_{self._pyro_name}_latent"``; with
   ``temperature=0`` return their mode and add nothing.
3. Optionally override ``_aux_moments()`` (marginal means and standard
   deviations of the auxiliary latents; the default is dense).
4. Register a :class:`~guide_core.BackendSpec` from a
   ``register_gaussian_backends`` hook; ``AutoGaussian(model, backend=name)``
   then builds your class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer.inspect import is_sample_site
from pyro.nn.module import PyroModule, PyroParam

from guide_core import AutoGuide, init_to_feasible, registry
from guide_core.plugin import (
    check_not_subsampled,
    constrain,
    distribution_quantiles,
    get_nested,
    model_dependencies,
    set_nested,
    validate_init_scale,
)

from .dense_layout import DenseLayout
from .structure import GaussianStructure, build_structure

__all__ = ["DEFAULT_BACKEND", "AutoGaussian"]

DEFAULT_BACKEND = "dense"


def _is_gaussian_class(factory: Any) -> bool:
    return isinstance(factory, type) and issubclass(factory, AutoGaussian)


class AutoGaussian(AutoGuide):
    """A Gaussian guide whose precision matrix is as sparse as the model allows.

    Every site whose density involves a latent variable (latent or observed)
    is a factor of a joint Gaussian over the auxiliary (whitened, unconstrained)
    latents; a factor couples only the latents the site depends on, and only
    within shared plates. It is as expressive as ``AutoMultivariateNormal``
    restricted to the conditional independences of the model, so it needs far
    fewer parameters. Each latent is then ``loc + scale * aux``, mapped to its
    support.

    ``AutoGaussian(model, backend=name)`` builds the class of the back end
    ``name`` (``AutoGaussianDense``, ``AutoGaussianFunsor``,
    ``AutoGaussianSparse`` or one a plugin registered); every back end has the
    same parameters and the same distribution, and differs only in cost.

    Parameters
    ----------
    model : callable
        A Pyro model.
    init_loc_fn : callable
        Per-site initialization strategy (an ``init_to_*``).
    init_scale : float
        Initial scale of every unconstrained latent (> 0).
    backend : str
        ``"dense"`` (default; cost cubic in the number of latents),
        ``"funsor"`` (needs ``pip install 'guide-core[funsor]'``), ``"sparse"``
        (ours: pure torch, cost linear in the plate sizes) or any back end in
        ``registry.backends()``.
    """

    scale_constraint = constraints.softplus_positive
    _prototype_hide_fn = staticmethod(lambda msg: not is_sample_site(msg))

    def __new__(cls, model: Any = None, *args: Any, backend: str | None = None, **kw):
        if cls is not AutoGaussian:
            return super().__new__(cls)
        spec = registry.backend(DEFAULT_BACKEND if backend is None else backend)
        if _is_gaussian_class(spec.factory):
            return super().__new__(spec.factory)
        return spec.factory(model, *args, **kw)  # a plain factory: no __init__ call

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Callable = init_to_feasible,
        init_scale: float = 0.1,
        backend: str | None = None,
    ):
        if type(self) is AutoGaussian:
            raise TypeError("AutoGaussian is abstract: pass backend= to choose one")
        if backend is not None and registry.backend(backend).factory is not type(self):
            raise ValueError(
                f"{type(self).__name__} was given backend={backend!r}, the back end "
                f"of {registry.backend(backend).factory.__name__}; use "
                f"AutoGaussian(model, backend={backend!r}) or drop backend="
            )
        self.init_loc_fn = init_loc_fn
        self._init_scale = validate_init_scale(init_scale)
        self._original_model = (model,)
        super().__init__(self._wrap_init(model, init_loc_fn))

    # -- setup -----------------------------------------------------------------

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        for site in self._prototype.sites.values():
            # one Gaussian over every element of every site: no subsampling
            check_not_subsampled(type(self).__name__, site)
        model, self._original_model = self._original_model[0], None
        self.dependencies = model_dependencies(model, args, kwargs)[
            "prior_dependencies"
        ]
        self._structure = build_structure(self._prototype, self.dependencies)
        self._make_params(self._structure)

    def _make_params(self, structure: GaussianStructure) -> None:
        self.locs = PyroModule()
        self.scales = PyroModule()
        self.white_vecs = PyroModule()
        self.prec_sqrts = PyroModule()
        ref = None
        for name, latent in structure.latents.items():
            loc = latent.site.init_unconstrained()
            ref = loc
            event_dim = len(latent.event_shape)
            scale = torch.full_like(loc, self._init_scale)
            set_nested(self.locs, name, PyroParam(loc, event_dim=event_dim))
            set_nested(
                self.scales,
                name,
                PyroParam(scale, constraint=self.scale_constraint, event_dim=event_dim),
            )
        for name, factor in structure.factors.items():
            shape = factor.batch_shape
            white_vec = ref.new_zeros(shape + (factor.d_size,))
            # Small noise keeps the gradient away from a singular point; the
            # factor's own block starts at the identity.
            prec_sqrt = torch.rand(
                shape + (factor.u_size, factor.d_size),
                dtype=ref.dtype,
                device=ref.device,
            )
            prec_sqrt.sub_(0.5).mul_(self._init_scale)
            if not factor.observed:
                prec_sqrt.diagonal(dim1=-2, dim2=-1).fill_(1)
            set_nested(self.white_vecs, name, PyroParam(white_vec, event_dim=1))
            set_nested(self.prec_sqrts, name, PyroParam(prec_sqrt, event_dim=2))

    def _factor_params(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the ``(white_vec, prec_sqrt)`` of factor ``name``."""
        return get_nested(self.white_vecs, name), get_nested(self.prec_sqrts, name)

    def _loc_scale(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return get_nested(self.locs, name), get_nested(self.scales, name)

    # -- sampling --------------------------------------------------------------

    @property
    def _aux_name(self) -> str:
        return f"_{self._pyro_name}_latent"

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Sample every latent site; return ``{site name: value}``."""
        self._ensure_setup(*args, **kwargs)
        aux = self._sample_aux_values(temperature=1.0)
        self._create_plates(*args, **kwargs)
        with_density = poutine.get_mask() is not False
        values = {}
        for name, latent in self._structure.latents.items():
            loc, scale = self._loc_scale(name)
            u = aux[name] * scale + loc
            log_density = 0.0
            if with_density:  # the Jacobian of aux -> u
                log_density = -scale.log().reshape(latent.batch_shape + (-1,)).sum(-1)
            site = latent.site
            value, log_density = constrain(site, u, log_density)
            with self._site_plates(site):
                point = dist.Delta(value, log_density, site.event_dim)
                values[name] = pyro.sample(name, point)
        return values

    def _sample_aux_values(self, *, temperature: float) -> dict[str, torch.Tensor]:
        """Draw (``temperature=1``) or return the mode of (``0``) the aux latents."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement _sample_aux_values()"
        )

    # -- summaries -------------------------------------------------------------

    def _aux_moments(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Return each latent's marginal aux ``(mean, std)`` (dense by default)."""
        layout = getattr(self, "_dense_layout", None)
        if layout is None:
            layout = self._dense_layout = DenseLayout(self._structure)
        return layout.moments(self._factor_params)

    def _median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        with poutine.mask(mask=False):
            aux = self._sample_aux_values(temperature=0.0)
        out = {}
        for name, latent in self._structure.latents.items():
            loc, scale = self._loc_scale(name)
            out[name] = latent.site.require_transform()(aux[name] * scale + loc)
        return out

    def _unconstrained_marginals(
        self, *args: Any, **kwargs: Any
    ) -> dict[str, dist.Normal]:
        out = {}
        for name, (mean, std) in self._aux_moments().items():
            loc, scale = self._loc_scale(name)
            out[name] = dist.Normal(mean * scale + loc, std * scale)
        return out

    def _quantiles(
        self, q: torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        marginals = self._unconstrained_marginals()
        values = {n: distribution_quantiles(d, q) for n, d in marginals.items()}
        return self._constrain(values)
