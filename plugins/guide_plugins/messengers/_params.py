"""Per-site parameters of the messenger guides, created at a site's first visit.

A messenger guide learns its parameters while it runs the model, so it can
only create a site's parameters when the model first samples that site. This
module holds what the three messenger families share about that: the site's
bijection (with the core's helpful support errors), the validated initial
value, and loading a saved state *before* the parameters exist.

State loaded early is kept as pending entries: each is applied the moment its
parameter is created (so the very first call already uses it), ``state_dict()``
reports the pending entries with the created ones, and a later
``load_state_dict`` replaces them. A model with stochastic control flow
creates a branch's parameters on the first call that takes the branch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import pyro
import torch
from pyro.distributions import constraints
from pyro.nn.module import PyroParam
from torch.distributions import Distribution, Transform, biject_to

from guide_core import AutoMessenger, init_to_feasible, init_to_mean
from guide_core.plugin import (
    get_nested,
    set_nested,
    support_errors,
    validate_init_scale,
)

__all__ = ["DEFAULT_INIT", "SiteParamMessenger"]

#: The messengers' default ``init_loc_fn``: the prior mean, else a feasible point.
DEFAULT_INIT = init_to_mean(fallback=init_to_feasible)


def _loaded_values_win(module: torch.nn.Module, incompatible: Any) -> None:
    # A param-store entry of the same name would shadow the loaded value on the
    # next access (the store wins in PyroModule); drop it so the module wins.
    store = pyro.get_param_store()
    for _, sub in module.named_modules():
        for leaf in getattr(sub, "_pyro_params", {}):
            prefix = sub._pyro_name
            fullname = f"{prefix}.{leaf}" if prefix else leaf
            if fullname in store:
                del store[fullname]


def _zeros_like_prior(prior: Distribution, shape: torch.Size) -> torch.Tensor:
    # Zeros on the prior's device and dtype: those of its first tensor argument.
    while hasattr(prior, "base_dist"):
        prior = prior.base_dist
    like = next((v for v in vars(prior).values() if isinstance(v, torch.Tensor)), None)
    return torch.zeros(shape) if like is None else like.new_zeros(shape)


class SiteParamMessenger(AutoMessenger):
    """An :class:`~guide_core.AutoMessenger` whose parameters are grouped by site.

    Parameters live in the submodules named by ``_param_groups`` (``locs``,
    ``scales``, ...), one per site, so the param-store names are
    ``locs.<site>``, ``scales.<site>`` as in ``pyro.infer.autoguide``. A loaded
    entry under one of these groups for a site not visited yet is kept pending
    (and reported by ``state_dict()``) until the site's parameters are created;
    a subclass that makes its own per-site module parameters lazily adds its
    group names to ``_param_groups``.

    Parameters
    ----------
    model : callable
        A Pyro model.
    init_loc_fn : callable
        Per-site initialization strategy (an ``init_to_*``).
    init_scale : float
        Initial scale of each unconstrained latent (> 0).
    amortized_plates : tuple of str
        Plates across which parameters are shared (for subsampling).
    """

    _param_groups: ClassVar[tuple[str, ...]] = ("locs", "scales")

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Callable,
        init_scale: float,
        amortized_plates: tuple[str, ...],
    ):
        if not callable(init_loc_fn):
            raise TypeError(
                f"'init_loc_fn' must be an init strategy such as init_to_median, or "
                f"its name in registry.make(): {init_loc_fn!r}"
            )
        init_scale = validate_init_scale(init_scale)
        super().__init__(model, amortized_plates=amortized_plates)
        self.init_loc_fn = init_loc_fn
        self._init_scale = init_scale
        self._pending_params: dict[str, torch.Tensor] = {}
        self.register_load_state_dict_post_hook(_loaded_values_win)

    # -- sites -----------------------------------------------------------------

    @staticmethod
    def _transform(name: str, prior: Distribution) -> Transform:
        """Return the bijection from unconstrained space to ``prior``'s support."""
        with support_errors({"name": name, "fn": prior}):
            return biject_to(prior.support)

    @torch.no_grad()
    def _init_unconstrained(
        self, name: str, prior: Distribution, transform: Transform
    ) -> torch.Tensor:
        """The site's initial value, unconstrained and shaped for its plates.

        A location loaded before the site's first visit is used as it is, so
        loading needs no usable init strategy.
        """
        event_dim = transform.domain.event_dim
        key = f"locs.{name}_unconstrained"
        if key in self._pending_params:
            shape = transform.inverse_shape(prior.batch_shape + prior.event_shape)
            needed = self._adjust_plates(_zeros_like_prior(prior, shape), event_dim)
            loaded = self._pending_params[key]
            self._check_loaded(key, loaded, needed, name)
            return loaded.to(needed).clone()
        site = {"name": name, "fn": prior}
        with support_errors(site):
            value = self.init_loc_fn(site)
        shape = prior.batch_shape + prior.event_shape
        if not isinstance(value, torch.Tensor) or value.shape != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else value
            raise ValueError(
                f"init_loc_fn gave site {name!r} the value {got!r}; expected a "
                f"tensor of shape {tuple(shape)} (the prior's batch_shape + "
                "event_shape)"
            )
        value = value.detach()
        if not bool(prior.support.check(value).all()):
            raise ValueError(
                f"init_loc_fn gave a value outside the support of site {name!r} "
                f"({prior.support}); give a value inside it, e.g. with "
                f"init_to_value(values={{{name!r}: ...}})"
            )
        unconstrained = transform.inv(value)
        if not bool(torch.isfinite(unconstrained).all()):
            raise ValueError(
                f"init_loc_fn gave site {name!r} a value that is not finite in the "
                f"unconstrained space (e.g. the infinite mean of a "
                f"{type(prior).__name__} prior); use init_loc_fn=init_to_median, "
                "or init_to_mean(fallback=...) only for priors with a finite mean"
            )
        return self._adjust_plates(unconstrained, event_dim)

    def _has_param(self, group: str, name: str) -> bool:
        try:
            get_nested(self, f"{group}.{name}_unconstrained")
        except AttributeError:
            return False
        return True

    def _param(self, group: str, name: str) -> torch.Tensor:
        """The constrained value of parameter ``<group>.<name>``."""
        return get_nested(self, f"{group}.{name}")

    def _new_param(
        self,
        group: str,
        name: str,
        value: torch.Tensor,
        constraint: constraints.Constraint = constraints.real,
        event_dim: int | None = None,
    ) -> None:
        """Create parameter ``<group>.<name>``; a pending loaded value replaces
        the initial one at once."""
        set_nested(self, f"{group}.{name}", PyroParam(value, constraint, event_dim))
        key = f"{group}.{name}_unconstrained"
        loaded = self._pending_params.pop(key, None)
        if loaded is None:
            return
        param = get_nested(self, key)
        self._check_loaded(key, loaded, param, name)
        with torch.no_grad():
            param.copy_(loaded)

    @staticmethod
    def _check_loaded(
        key: str, loaded: torch.Tensor, needed: torch.Tensor, name: str
    ) -> None:
        if loaded.shape != needed.shape:
            raise ValueError(
                f"the loaded state has {key!r} of shape {tuple(loaded.shape)}, but "
                f"site {name!r} of this model needs shape {tuple(needed.shape)}; "
                "load a state saved from a guide of the same model"
            )

    # -- state: entries for sites not visited yet wait until they are ---------

    def _save_to_state_dict(
        self, destination: dict, prefix: str, keep_vars: bool
    ) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for key, value in self._pending_params.items():
            destination[prefix + key] = value

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: Mapping,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        existing = {n for n, _ in self.named_parameters()}
        existing |= {n for n, _ in self.named_buffers()}
        for key in [k for k in state_dict if k.startswith(prefix)]:
            local = key[len(prefix) :]
            self._pending_params.pop(local, None)
            if local in existing:
                continue
            if local.split(".")[0] in self._param_groups:
                # A site this guide has not visited yet: apply it on creation.
                self._pending_params[local] = state_dict.pop(key).detach().clone()
        super()._load_from_state_dict(
            state_dict,
            prefix,
            local_metadata,
            strict,
            missing_keys,
            unexpected_keys,
            error_msgs,
        )
