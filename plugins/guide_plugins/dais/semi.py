""":class:`AutoSemiDAIS`: a global guide, and DAIS for each local element.

For a model with global latents ``g`` and, in one subsampled plate of size
``N``, local latents ``z_i`` that are independent given ``g``, the guide
draws ``g`` from a parametric ``global_guide`` and then, for each element
``i`` of the subsample of size ``M``, runs one annealed Langevin trajectory
(see :mod:`.langevin`) from a Gaussian ``q0_i`` (or from a ``local_guide``)
to ``p(z_i | g, x_i)``, the local model's density of element ``i``. With
``w_i`` the weight of element ``i``'s trajectory, the ELBO is::

    E[ log p(g) - log q(g) + (N / M) sum_{i in subsample} log w_i ]

(Jankowiak & Phan, "Surrogate likelihoods for variational annealed
importance sampling"; a locally enhanced bound in the sense of Geffner &
Domke): the plate's scale ``N / M`` makes it an unbiased estimate of the
full-data bound, which is why this guide, unlike AutoDAIS, subsamples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.nn.module import PyroParam
from pyro.poutine.runtime import get_plates
from torch import nn

from guide_core import AutoGuide
from guide_core.plugin import GuideDelta, constrain, validate_init_scale

from .langevin import anneal, check_dynamics, logit_step, schedule, step_size
from .local import LocalLayout, local_trace
from .plates import (
    check_arguments,
    find_local_plate,
    local_model_sites,
    local_subsample,
    make_local_plate,
)
from .semi_summaries import SemiSummaries

__all__ = ["AutoSemiDAIS"]


class AutoSemiDAIS(SemiSummaries, AutoGuide):
    """A parametric guide for the globals and per-element DAIS for the locals.

    The model's latent sites in the subsampled plate (the *local* sites) get
    one DAIS trajectory per element of the subsample, targeting the density
    of ``local_model`` given the globals; the other (*global*) sites are
    guided by ``global_guide``. The ELBO's local terms carry the plate's
    scale, so with data subsampling it is an unbiased estimate of the
    full-data bound (see the module docstring).

    Parameters in the param store (``AutoSemiDAIS.`` or ``prefix + "."``):
    ``z_0_loc`` and ``z_0_scale`` (shape ``(N, D)``: the Gaussian ``q0_i`` of
    each element's flat unconstrained local vector; absent with a
    ``local_guide``), ``eta_coeff`` (step size ``eta_max *
    sigmoid(eta_coeff)``), ``gamma``, ``mass_matrix`` and
    ``beta_increments`` (shapes ``(N,)``, ``(N,)``, ``(N, D)``, ``(N, K)``,
    or ``()``, ``()``, ``(D,)``, ``(K,)`` with
    ``use_global_dais_params=True``), and the global guide's own parameters
    under ``global_guide.``.

    :meth:`median` and :meth:`quantiles` give the global guide's for the
    global sites; for the local sites (at every element of the plate, or at
    the model's own ``subsample=`` indices) they are estimated from
    :attr:`num_summary_samples` draws seeded with :attr:`summary_seed` on a
    fork of the random state, so a loaded guide reproduces them.

    Parameters
    ----------
    model : callable
        The Pyro model: global latents, then ``local_model`` of what the
        global part returns.
    local_model : callable
        The part of ``model`` with the local sites: called with the value the
        global model returns (with ``model``'s own arguments when there is
        no ``global_guide``); all its sample sites lie in the local plate.
    global_guide : callable, optional
        A guide of the global sites with a ``.model`` (an autoguide of the
        global model) returning ``{site name: value}``; ``None`` when the model
        has no global latents.
    local_guide : callable, optional
        A guide with ``local_model``'s signature whose draw of the local
        sites (in the same plate) is the start of the trajectories, instead
        of the Gaussian ``q0_i``; e.g. an amortized encoder.
    prefix : str, optional
        The name of the guide's params and auxiliary site (default
        ``"AutoSemiDAIS"``).
    K : int
        Number of annealing steps, >= 1.
    eta_init, eta_max : float
        Initial and largest step size, ``0 < eta_init < eta_max``.
    gamma_init : float
        Initial momentum damping, in ``(0, 1)``.
    init_scale : float
        Initial standard deviation of each ``q0_i`` (> 0).
    subsample_plate : str, optional
        The local plate's name; needed when the model has several plates and
        none or several of them are subsampled.
    use_global_dais_params : bool
        Share the step size, damping, mass and schedule among all elements
        (default: one set per element; ``q0_i`` is always per element).
    """

    num_summary_samples: int = 250
    summary_seed: int = 0

    def __init__(
        self,
        model: Callable,
        local_model: Callable,
        global_guide: Callable | None = None,
        local_guide: Callable | None = None,
        *,
        prefix: str | None = None,
        K: int = 4,
        eta_init: float = 0.01,
        eta_max: float = 0.1,
        gamma_init: float = 0.9,
        init_scale: float = 0.1,
        subsample_plate: str | None = None,
        use_global_dais_params: bool = False,
    ):
        checked = check_dynamics(K, eta_init, eta_max, gamma_init)
        self.K, self.eta_init, self.eta_max, self.gamma_init = checked
        self._init_scale = validate_init_scale(init_scale)
        check_arguments(
            local_model,
            global_guide,
            local_guide,
            subsample_plate,
            prefix,
            use_global_dais_params,
        )
        super().__init__(model)
        if prefix is not None:
            self._pyro_name = prefix
        self._local_model = (local_model,)  # a tuple: the model is not a submodule
        self.global_guide = global_guide
        self.local_guide = local_guide
        self.subsample_plate = subsample_plate
        self.use_global_dais_params = use_global_dais_params

    @property
    def local_model(self) -> Callable:
        """The part of the model with the local sites."""
        return self._local_model[0]

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_local_model"] = None  # as the base drops the model
        return state

    # -- set up -----------------------------------------------------------------

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        self._refuse_a_master()
        super()._setup_prototype(*args, **kwargs)
        sites = self._prototype.sites
        plate = find_local_plate(self._prototype, self.subsample_plate)
        local = [s for s in sites.values() if plate in s.plates]
        if not local:
            raise ValueError(
                f"AutoSemiDAIS found no latent site in the plate {plate.name!r}; it "
                "guides local latents of a (subsampled) plate, so the model needs "
                "some (use AutoDAIS for a model without them)"
            )
        self._layout = LocalLayout.from_sites(plate, local)
        self._prototype_frames.pop(plate.name)  # made per call from local_model
        self._global_names = [n for n in sites if n not in self._layout.names]
        if self.global_guide is None and self._global_names:
            raise ValueError(
                f"the model has global latent sites {self._global_names} outside the "
                f"plate {plate.name!r}, but no global_guide; pass one, e.g. "
                "global_guide=AutoNormal(global_model)"
            )
        if self.global_guide is not None and hasattr(
            self.global_guide, "_ensure_setup"
        ):
            self.global_guide._ensure_setup(*args, **kwargs)
        with poutine.block(), torch.no_grad():
            local_args, local_kwargs = self._local_inputs(args, kwargs, prototype=True)
            local_model_sites(
                self.local_model, local_args, local_kwargs, plate, self._layout.names
            )
        self._make_params(plate.full_size)

    def _refuse_a_master(self) -> None:
        if self.master is not None:
            raise ValueError(
                "AutoSemiDAIS composes its own parts and cannot be a part of an "
                "AutoGuideList; pass the guide of the global sites as global_guide= "
                "and use AutoSemiDAIS as the whole guide"
            )

    def _check_prototype(self, part_trace: Any) -> None:
        """Check that ``global_guide`` guides exactly the global sites."""
        names = [n for n, _ in part_trace.iter_stochastic_nodes()]
        local = [n for n in names if n in self._layout.names]
        unknown = [n for n in names if n not in self._prototype.sites]
        missing = [n for n in self._global_names if n not in names]
        for what, bad in (("local", local), ("unknown", unknown)):
            if bad:
                raise ValueError(
                    f"global_guide guides {bad}, {what} site(s) of the model; build "
                    f"it on the global model, whose latents are {self._global_names}"
                )
        if missing:
            raise ValueError(
                f"global_guide does not guide the global site(s) {missing}; build it "
                "on the global model with all of them"
            )

    def _make_params(self, n: int) -> None:
        like = self._layout.slots[0].site.unconstrained_value
        d, k = self._layout.dim, self.K
        if self.local_guide is None:
            self.z_0_loc = nn.Parameter(like.new_zeros(n, d))
            scale = like.new_full((n, d), self._init_scale)
            self.z_0_scale = PyroParam(scale, constraints.softplus_positive)
        shape = () if self.use_global_dais_params else (n,)
        coeff = logit_step(self.eta_init, self.eta_max)
        self.eta_coeff = nn.Parameter(like.new_full(shape, coeff))
        gamma = like.new_full(shape, self.gamma_init)
        self.gamma = PyroParam(gamma, constraints.interval(0.0, 1.0))
        mass = like.new_ones(shape + (d,))
        self.mass_matrix = PyroParam(mass, constraints.softplus_positive)
        increments = like.new_full(shape + (k,), 1.0 / k)
        self.beta_increments = PyroParam(increments, constraints.simplex)

    # -- the pieces of a call ------------------------------------------------------

    def _local_inputs(
        self,
        args: tuple,
        kwargs: Mapping[str, Any],
        values: Mapping | None = None,
        prototype: bool = False,
    ) -> tuple[tuple, dict]:
        """The arguments of ``local_model``: what the global model returns given
        the global ``values`` (its own draw in the prototype run)."""
        if self.global_guide is None:
            return tuple(args), dict(kwargs)
        global_model = self.global_guide.model
        data = {} if prototype else dict(values or {})
        trace = local_trace(global_model, args, kwargs, data)
        return (trace.nodes["_RETURN"]["value"],), {}

    def _globals(
        self, args: tuple, kwargs: Mapping[str, Any]
    ) -> tuple[dict, tuple, dict]:
        """Draw the global sites; return them and the local model's arguments."""
        if self.global_guide is None:
            return {}, tuple(args), dict(kwargs)
        values = self.global_guide(*args, **kwargs) or {}
        local_args, local_kwargs = self._local_inputs(args, kwargs, values)
        return dict(values), local_args, local_kwargs

    @property
    def step_size(self) -> torch.Tensor:
        """The step size of each element (or the shared one)."""
        return step_size(self.eta_coeff, self.eta_max)

    @property
    def betas(self) -> torch.Tensor:
        """The schedule ``beta_1 < ... < beta_K = 1`` (last dim ``K``)."""
        return schedule(self.beta_increments)

    def _dynamics(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Step size, damping, mass and schedule of the elements ``idx``."""
        eta, gamma, mass, betas = (
            self.step_size,
            self.gamma,
            self.mass_matrix,
            self.betas,
        )
        if not self.use_global_dais_params:
            eta, gamma, mass, betas = eta[idx], gamma[idx], mass[idx], betas[idx]
        return {"eta": eta, "gamma": gamma, "mass": mass, "betas": betas}

    def _base(
        self, idx: torch.Tensor, args: tuple, kwargs: dict
    ) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """Draw each element's start ``z_0`` (``(M, D)``); return it, its log
        density per element and the base's log density (summed) as a function."""
        if self.local_guide is None:
            base = dist.Normal(self.z_0_loc[idx], self.z_0_scale[idx]).to_event(1)
            z_0 = base.rsample()
            return z_0, base.log_prob(z_0), lambda z: base.log_prob(z).sum()
        return self._layout.guide_start(self.local_guide, idx, args, kwargs)

    def _local_trajectories(
        self, idx: torch.Tensor, args: tuple, kwargs: dict, create_graph: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One trajectory per element of ``idx``: ``z_K`` (``(M, D)``) and, per
        element, ``log p(z_K) - log w``."""
        z_0, log_q0, log_q = self._base(idx, args, kwargs)

        def log_p(z: torch.Tensor) -> torch.Tensor:
            return self._layout.log_density(
                self.local_model, z, idx, args, kwargs
            ).sum()

        z, kinetic = anneal(
            z_0, log_p, log_q, **self._dynamics(idx), create_graph=create_graph
        )
        return z, log_q0 - kinetic

    # -- the guide -------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Draw the globals, then every local site of the subsample; return
        ``{site name: value}``."""
        self._ensure_setup(*args, **kwargs)
        self._refuse_a_master()
        outer = [f.name for f in get_plates() if f.name not in self._prototype.plates]
        if outer:
            raise NotImplementedError(
                f"AutoSemiDAIS runs its trajectories once per call, but it is called "
                f"inside the plate(s) {', '.join(map(repr, outer))} "
                "(vectorize_particles=True or Predictive(parallel=True)); use "
                "vectorize_particles=False / parallel=False"
            )
        plates = self._create_plates(*args, **kwargs)
        result, local_args, local_kwargs = self._globals(args, kwargs)
        found = local_subsample(
            self.local_model, local_args, local_kwargs, self._layout.plate
        )
        plate = make_local_plate(self._layout.plate, *found)
        plates[self._layout.plate.name] = plate
        with plate as idx:
            pass  # the subsample's indices; the inner runs open the plate again
        z, log_density = self._local_trajectories(idx, local_args, local_kwargs)
        with plate:
            pad = (1,) * (-self._layout.plate.dim - 1)
            m, d = z.shape
            point = dist.Delta(
                z.reshape((m,) + pad + (d,)),
                log_density=log_density.reshape((m,) + pad),
                event_dim=1,
            )
            pyro.sample(
                f"_{self._pyro_name}_latent", point, infer={"is_auxiliary": True}
            )
        unconstrained = self._layout.unpack(z)
        for slot in self._layout.slots:
            site, u = slot.site, unconstrained[slot.name]
            with self._site_plates(site):
                value, log_density = constrain(site, u)
                point = GuideDelta(
                    value, log_density, event_dim=site.event_dim, unconstrained=u
                )
                result[slot.name] = pyro.sample(slot.name, point)
        return result

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.TorchDistribution:
        """Not available: the locals' DAIS posterior has no closed-form density.

        Raises
        ------
        NotImplementedError
            Always; draw from the posterior by calling the guide, or use
            :meth:`median` and :meth:`quantiles`.
        """
        raise NotImplementedError(
            "AutoSemiDAIS's posterior of the local sites (Gaussians moved by K "
            "Langevin steps) has no closed-form density; draw from it by calling "
            "the guide or use median()/quantiles()"
        )
