"""The AutoGuide protocol: the base class of every guide that is a ``PyroModule``.

Implementing a guide family
---------------------------
1. Subclass :class:`AutoGuide`; take ``model`` first and the rest as keywords.
   If the family has an ``init_loc_fn``, pass it to ``super().__init__`` through
   :meth:`AutoGuide._wrap_init` so the prototype runs under it.
2. Override ``_setup_prototype(*args, **kwargs)``: call ``super()`` first, then
   create parameters from ``self._prototype.sites`` (a :class:`SiteFacts` each).
3. Implement ``forward(*args, **kwargs)``: call ``self._ensure_setup(...)``
   and ``self._create_plates(...)``, then for each site enter
   ``self._site_plates(site)`` and sample it; return ``{name: value}``.
4. For ``median``/``quantiles``, either implement
   ``_unconstrained_marginals()`` (elementwise distributions of each site's
   unconstrained value) or override ``_median``/``_quantiles``.
5. Register it with a ``GuideSpec`` from a ``register_guides`` hook.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.nn.module import PyroModule

from .dependent_support import guide_values, record_value, transform_of
from .draws import PosteriorDraws
from .gaussian_start import GaussianStart, site_transforms
from .init_messenger import InitMessenger, unwrap_init
from .prototype import Prototype, SiteFacts, prototype_hide_fn, trace_prototype
from .subsample_support import model_subsamples
from .summaries import as_quantiles, distribution_median, distribution_quantiles

__all__ = ["AutoGuide", "record_init_call", "unwrap_init", "validate_init_scale"]


def validate_init_scale(init_scale: Any) -> float:
    """Return ``init_scale`` as a float, or raise if it is not a positive number."""
    if isinstance(init_scale, bool) or not isinstance(init_scale, (int, float)):
        raise TypeError(
            f"'init_scale' must be a positive float such as 0.1: {init_scale!r}"
        )
    if not init_scale > 0:
        raise ValueError(f"'init_scale' must be > 0: {init_scale!r}")
    return float(init_scale)


def record_init_call(cls: type) -> None:
    """Make ``cls.__init__`` note the arguments it was called with.

    The outermost ``__init__`` of a construction keeps ``(args, kwargs)`` after
    the model in ``_init_call``; :func:`guide_core.save` stores them, so that
    :func:`guide_core.load` can build the same guide again. Every subclass of
    :class:`AutoGuide` and :class:`~guide_core.AutoMessenger` gets this
    automatically; ``inspect.signature`` still shows the real ``__init__``.
    """
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "_records_call", False):
        return

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if "_init_call" not in self.__dict__:
            rest = args[1:] if args else ()
            named = {k: v for k, v in kwargs.items() if k != "model"}
            self.__dict__["_init_call"] = (rest, named)
        init(self, *args, **kwargs)

    __init__._records_call = True
    cls.__init__ = __init__


class AutoGuide(PyroModule, PosteriorDraws):
    """Base class of automatic guides.

    A subclass builds its parameters from one traced run of the model (the
    prototype) on its first call and implements ``forward`` with the model's
    ``*args, **kwargs``. Guides can be used alone or as parts of an
    :class:`~guide_core.AutoGuideList`.

    Parameters
    ----------
    model : callable
        A Pyro model.
    create_plates : callable, optional
        Takes the model's ``*args, **kwargs`` and returns a ``pyro.plate`` or an
        iterable of them; plates it does not return are made automatically at
        full size. Use it to subsample data.
    """

    _prototype_hide_fn = staticmethod(prototype_hide_fn)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        record_init_call(cls)  # so that guide_core.save can rebuild the guide

    def __init__(self, model: Callable, *, create_plates: Callable | None = None):
        super().__init__(name=type(self).__name__)
        self.master = None
        self._model = (model,)  # a tuple, so the model is not a submodule
        self.create_plates = create_plates
        self.prototype_trace = None
        self._prototype_frames: dict[str, Any] = {}
        self._prototype: Prototype | None = None
        self._pending_state: tuple[dict, bool] | None = None

    @staticmethod
    def _wrap_init(model: Callable, init_loc_fn: Callable) -> Callable:
        """Return ``model`` run under ``init_loc_fn``, checking it is callable."""
        if not callable(init_loc_fn):
            raise TypeError(
                f"'init_loc_fn' must be an init strategy such as init_to_median, or "
                f"its name in registry.make(): {init_loc_fn!r}"
            )
        return InitMessenger(init_loc_fn)(model)

    @property
    def model(self) -> Callable:
        """The model this guide was built for."""
        return self._model[0]

    # -- pickling and the master guide of a composite -------------------------

    def __getstate__(self) -> dict:
        state = getattr(super(), "__getstate__", self.__dict__.copy)()
        state = dict(state)
        state["_model"], state["master"] = None, None  # weakrefs do not pickle
        return state

    def __setstate__(self, state: dict) -> None:
        getattr(super(), "__setstate__", self.__dict__.update)(state)
        ref = weakref.ref(self)
        for _, module in self.named_modules():
            if module is not self and isinstance(module, AutoGuide):
                module._update_master(ref)

    def _update_master(self, master_ref: Callable[[], AutoGuide]) -> None:
        self.master = master_ref
        for _, module in self.named_modules():
            if module is not self and isinstance(module, AutoGuide):
                module.master = master_ref

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, AutoGuide):
            value._update_master(self.master or weakref.ref(self))
        super().__setattr__(name, value)

    # -- the prototype ---------------------------------------------------------

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        """Trace the model once and record its facts; families extend this."""
        init_fn = getattr(self, "init_loc_fn", None)
        self._prototype = trace_prototype(
            self.model, args, kwargs, hide_fn=self._prototype_hide_fn, init_fn=init_fn
        )
        self.prototype_trace = self._prototype.trace
        self._prototype_frames = dict(self._prototype.frames)
        master = self.master() if self.master is not None else None
        if master is not None and master.prototype_trace is not None:
            master._check_prototype(self.prototype_trace)

    def _ensure_setup(self, *args: Any, **kwargs: Any) -> None:
        """Set up the prototype on first use and apply any state loaded before it."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
            if self._pending_state is not None:
                state, strict = self._pending_state
                self._pending_state = None
                self._load_now(state, strict)

    def _load_now(self, state: Mapping[str, Any], strict: bool) -> Any:
        result = super().load_state_dict(state, strict=strict)
        store = pyro.get_param_store()
        for name in self._store_names():
            if name in store:  # the loaded values win over stale store entries
                del store[name]
        return result

    def _store_names(self) -> Iterator[str]:
        """Yield the param-store name of each parameter (``AutoNormal.locs.z``).

        ``named_pyro_params`` is PyroModule's own: module-relative names and
        constrained values.
        """
        for _, module in self.named_modules():
            for name in getattr(module, "_pyro_params", {}):
                prefix = module._pyro_name
                yield f"{prefix}.{name}" if prefix else name

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load parameters, also into a guide that has not been called yet.

        Parameters are created on the first call; a state loaded before then is
        kept and applied right after they are created, so a trained guide's
        ``state_dict`` reproduces it in a fresh guide with no warm-up call.
        """
        if self.prototype_trace is None and len(state_dict) > 0:
            self._pending_state = (dict(state_dict), strict)
            return torch.nn.modules.module._IncompatibleKeys([], [])
        return self._load_now(state_dict, strict)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Return the parameters, including a state loaded but not yet applied."""
        if self._pending_state is not None and not args and not kwargs:
            return dict(self._pending_state[0])
        return super().state_dict(*args, **kwargs)

    def _sites(self) -> Mapping[str, SiteFacts]:
        if self._prototype is None:
            raise RuntimeError(
                f"{type(self).__name__} has no prototype yet: call the guide (or its "
                "median) with the model's arguments once first"
            )
        return self._prototype.sites

    # -- plates ----------------------------------------------------------------

    def _create_plates(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.master is not None:
            if self.create_plates is not None:
                raise ValueError(
                    f"create_plates was passed to {type(self).__name__}, a part of an "
                    "AutoGuideList; pass it to the AutoGuideList instead"
                )
            self.plates = self.master().plates
            return self.plates
        plates: dict[str, Any] = {}
        if self.create_plates is not None:
            made = self.create_plates(*args, **kwargs)
            made = [made] if isinstance(made, pyro.plate) else list(made)
            for plate in made:
                if not isinstance(plate, pyro.plate):
                    raise TypeError(
                        f"create_plates returned {plate!r}, not a pyro.plate; return "
                        "a pyro.plate or a list of them"
                    )
                plates[plate.name] = plate
        explicit = {}
        if self._prototype is not None and self._prototype.explicit_subsamples:
            wanted = self._prototype.explicit_subsamples - set(plates)
            if wanted:
                explicit = model_subsamples(self.model, args, kwargs, wanted)
        for name, frame in sorted(self._prototype_frames.items()):
            if name in plates:
                continue
            full_size = frame.full_size or frame.size
            if name in explicit:  # respect the model's own subsample indices
                plates[name] = pyro.plate(
                    name, full_size, dim=frame.dim, subsample=explicit[name]
                )
            else:
                plates[name] = pyro.plate(
                    name, full_size, dim=frame.dim, subsample_size=frame.size
                )
        self.plates = plates
        return plates

    def _site_plates(self, site: SiteFacts) -> contextlib.ExitStack:
        """Return a context that enters the plates ``site`` sits in."""
        stack = contextlib.ExitStack()
        for plate in site.plates:
            stack.enter_context(self.plates[plate.name])
        return stack

    # -- the protocol ----------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._prototype is not None and not self._prototype.dependent:
            return super().__call__(*args, **kwargs)
        with guide_values():  # supports that depend on values drawn before
            return super().__call__(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Sample every latent site; return ``{site name: value}``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def call(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        """Call the guide and return its values as a tuple sorted by site name.

        ``torch.jit.trace_module`` cannot trace a dict result; this can be traced.
        """
        result = self(*args, **kwargs)
        return tuple(value for _, value in sorted(result.items()))

    def sample_latent(self, *args: Any, **kwargs: Any) -> Any:
        """Sample the guide's encoded latent (for guides that have one)."""
        return None

    @torch.no_grad()
    def warm_start(
        self, start: GaussianStart, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Set the parameters from a Gaussian over the unconstrained latent.

        The guide is set up with the model's arguments first. A Gaussian
        family sets its location and scales (and its covariance, where it has
        one) to match ``start`` as closely as it can.

        Returns
        -------
        dict
            ``{param name in Pyro's store: tensor}``: each parameter's natural
            step size, element by element, in its unconstrained space (the
            posterior sd for a location, the scale itself for a scale), for
            an optimizer whose steps are sized in posterior units.

        Raises
        ------
        NotImplementedError
            The family has no Gaussian to set (flows, point masses, ...).
        """
        self._ensure_setup(*args, **kwargs)
        owner = self.master() if self.master is not None else self
        with poutine.block():
            owner(*args, **kwargs)  # the module's params are the store's tensors now
        steps = self._warm_start(start.in_transforms(site_transforms(self._sites())))
        return {f"{self._pyro_name}.{name}": value for name, value in steps.items()}

    def _warm_start(self, start: GaussianStart) -> dict[str, torch.Tensor]:
        raise NotImplementedError(
            f"{type(self).__name__} has no Gaussian parameters to warm-start"
        )

    def _unconstrained_marginals(
        self, *args: Any, **kwargs: Any
    ) -> dict[str, torch.distributions.Distribution]:
        """Return each site's elementwise posterior in the unconstrained space."""
        raise NotImplementedError(
            f"{type(self).__name__} does not define median() or quantiles()"
        )

    def _constrain(self, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sites, out = self._sites(), {}
        with guide_values():  # a dependent support follows the values before it
            for name, value in values.items():
                out[name] = transform_of(sites[name])(value)
                record_value(name, out[name])
        return out

    def _median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        marginals = self._unconstrained_marginals(*args, **kwargs)
        return self._constrain(
            {n: distribution_median(d) for n, d in marginals.items()}
        )

    def _quantiles(
        self, q: torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        marginals = self._unconstrained_marginals(*args, **kwargs)
        values = {n: distribution_quantiles(d, q) for n, d in marginals.items()}
        return self._constrain(values)

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Return the posterior median of each latent site, ``{name: tensor}``."""
        self._ensure_setup(*args, **kwargs)
        return self._median(*args, **kwargs)

    @torch.no_grad()
    def quantiles(
        self, quantiles: Sequence[float] | torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Return posterior quantiles of each latent site.

        Parameters
        ----------
        quantiles : list of float or Tensor
            Levels in ``[0, 1]``, e.g. ``[0.05, 0.5, 0.95]``.

        Returns
        -------
        dict
            ``{site name: tensor}`` with the levels on the leading dimension.
        """
        self._ensure_setup(*args, **kwargs)
        return self._quantiles(as_quantiles(quantiles), *args, **kwargs)
