"""One traced run of the model, frozen into per-site facts that every family reads.

Every guide starts by running the model once under its initialization strategy.
:func:`trace_prototype` turns that run into a :class:`Prototype`: for each latent
site a :class:`SiteFacts` (shape, event dim, support and its bijection, plates,
discreteness, initial value in both spaces) and for each plate a
:class:`PlateFacts`. Families read these instead of re-deriving them, so a fact
(and the error for a bad site) is computed and worded in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from pyro import poutine
from pyro.ops.tensor_utils import periodic_repeat
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import Transform, biject_to

from .dependent_support import dependent_supports
from .init_messenger import InitMessenger, support_errors
from .initialization import init_to_feasible
from .subsample_support import full_supports, support_here

__all__ = [
    "PlateFacts",
    "Prototype",
    "SiteFacts",
    "prototype_hide_fn",
    "site_plates",
    "trace_prototype",
]


def prototype_hide_fn(msg: dict) -> bool:
    """Hide everything but latent sample sites from the prototype trace."""
    return msg["type"] != "sample" or msg["is_observed"] or site_is_subsample(msg)


@attrs.frozen
class PlateFacts:
    """A vectorized plate as the prototype run saw it.

    Attributes
    ----------
    name : str
    dim : int
        Its (negative) batch dimension.
    size : int
        The size it had in the prototype run (the subsample size if subsampled).
    full_size : int
        The size of the whole plate.
    """

    name: str
    dim: int
    size: int
    full_size: int

    @property
    def subsampled(self) -> bool:
        """Whether the prototype run saw a subsample of the plate."""
        return self.size != self.full_size


@attrs.frozen(eq=False)
class SiteFacts:
    """What every guide needs to know about one latent sample site.

    Attributes
    ----------
    name : str
    fn : Distribution
        The prior as seen in the prototype run (for its shapes and support).
    value : Tensor
        The initial value in the constrained space (detached).
    plates : tuple of PlateFacts
        The vectorized plates the site sits in, outermost first.
    infer : Mapping
        The site's ``infer`` dict (e.g. its enumeration config).
    transform : Transform or None
        ``biject_to(support)``; ``None`` when the support has no bijection
        (see :meth:`require_transform`).
    unconstrained_value : Tensor or None
        ``transform.inv(value)``: the initial value in the unconstrained space.
    full_support : Constraint or None
        The support over the whole of a subsampled plate, where its bounds
        change with the subsample (see :mod:`guide_core.core.subsample_support`).
    full_value : Tensor or None
        The initial value over the whole plate, where ``full_support`` is set.
    support_given : callable or None
        Where the support depends on other latent sites (``Uniform(0, 1 -
        a)``), a function from their values to it (see
        :mod:`guide_core.core.dependent_support`).
    """

    name: str
    fn: Any
    value: torch.Tensor
    plates: tuple[PlateFacts, ...]
    infer: Mapping[str, Any]
    transform: Transform | None
    unconstrained_value: torch.Tensor | None
    _transform_error: Exception | None = None
    full_support: Any = None
    full_value: torch.Tensor | None = None
    support_given: Callable[[Mapping[str, torch.Tensor]], Any] | None = None

    @property
    def support(self) -> Any:
        """The constraint the site's values satisfy."""
        return self.fn.support

    @property
    def whole_support(self) -> Any:
        """The constraint a parameter covering every subsampled plate satisfies."""
        return self.fn.support if self.full_support is None else self.full_support

    @property
    def event_dim(self) -> int:
        """The number of rightmost dims of ``value`` that form one event."""
        return self.fn.event_dim

    @property
    def is_discrete(self) -> bool:
        """Whether the support is discrete."""
        return bool(self.fn.support.is_discrete)

    @property
    def shape(self) -> torch.Size:
        """The shape of the site's value."""
        return self.value.shape

    @property
    def unconstrained_event_dim(self) -> int:
        """The event dim of the unconstrained value (it may differ, e.g. simplex)."""
        self.require_transform()
        return self.event_dim + self.unconstrained_value.dim() - self.value.dim()

    def require_transform(self) -> Transform:
        """Return the bijection to the support, or raise an error naming the site.

        Where the support follows the subsample, it is the bijection to the
        support at the enclosing plate's current indices.
        """
        if self.transform is None:
            raise self._transform_error
        if self.full_support is not None:
            return biject_to(support_here(self, self.full_support))
        return self.transform

    def require_unconstrained(self) -> torch.Tensor:
        """Return a fresh copy of the unconstrained initial value (safe to make a
        parameter of), or raise an error naming the site."""
        self.require_transform()
        return self.unconstrained_value.clone()

    def full_size(self, value: torch.Tensor, event_dim: int) -> torch.Tensor:
        """Repeat ``value`` (shaped like this site) to the full size of every
        subsampled plate, so parameters cover the whole plate."""
        for plate in self.plates:
            if plate.subsampled:
                dim = plate.dim - event_dim
                value = periodic_repeat(value, plate.full_size, dim).contiguous()
        return value

    def init_value(self) -> torch.Tensor:
        """The constrained initial value at full plate size (a fresh tensor)."""
        if self.full_value is not None:
            return self.full_value.clone()
        return self.full_size(self.value.clone(), self.event_dim)

    def init_unconstrained(self) -> torch.Tensor:
        """The unconstrained initial value at full plate size (a fresh tensor)."""
        u = self.require_unconstrained()
        if self.full_value is not None:
            return biject_to(self.full_support).inv(self.full_value).detach()
        return self.full_size(u, self.unconstrained_event_dim)


@attrs.frozen(eq=False)
class Prototype:
    """The frozen facts of one model run.

    Attributes
    ----------
    trace : Trace
        The prototype trace itself (Pyro's ``prototype_trace``).
    sites : Mapping[str, SiteFacts]
        The latent sites, in the order the model sampled them.
    plates : Mapping[str, PlateFacts]
        Every vectorized plate a latent site sits in.
    frames : Mapping[str, CondIndepStackFrame]
        The same plates as Pyro frames (Pyro's ``_prototype_frames``).
    explicit_subsamples : frozenset of str
        Plates the model subsamples with explicit ``subsample=`` indices.
    """

    trace: Any
    sites: Mapping[str, SiteFacts]
    plates: Mapping[str, PlateFacts]
    frames: Mapping[str, Any]
    explicit_subsamples: frozenset[str] = frozenset()

    @property
    def dependent(self) -> bool:
        """Whether a site's support depends on other latent sites."""
        return any(site.support_given is not None for site in self.sites.values())

    def plates_of(self, name: str) -> tuple[PlateFacts, ...]:
        """Return the plates of the trace's sample site ``name``, outermost first:
        a latent site's from its facts, any other's (an observed site the
        trace kept) read off the trace with :func:`site_plates`."""
        if name in self.sites:
            return self.sites[name].plates
        return site_plates(self.trace.nodes[name])

    def continuous(self) -> dict[str, SiteFacts]:
        """Return the continuous sites, raising for any discrete one."""
        for site in self.sites.values():
            if site.is_discrete:
                site.require_transform()
        return dict(self.sites)


def _stack_plates(site: dict) -> list[PlateFacts]:
    """The plates of a trace site, in its ``cond_indep_stack``'s order."""
    plates = []
    for frame in site["cond_indep_stack"]:
        if not frame.vectorized:
            raise NotImplementedError(
                f"site {site['name']!r} is in the sequential plate {frame.name!r}; "
                "autoguides need vectorized plates: write "
                f"`with pyro.plate({frame.name!r}, ...):` instead of iterating it"
            )
        full_size = frame.full_size or frame.size
        plates.append(PlateFacts(frame.name, frame.dim, frame.size, full_size))
    return plates


def _outermost_first(plates: list[PlateFacts]) -> tuple[PlateFacts, ...]:
    return tuple(sorted(plates, key=lambda p: p.dim))


def site_plates(site: dict) -> tuple[PlateFacts, ...]:
    """Return the plates of any sample site of a trace, outermost first.

    For a latent site of a prototype this is its :attr:`SiteFacts.plates`;
    use it (or :meth:`Prototype.plates_of`) for the sites a prototype keeps
    no facts of, such as the observed ones.

    Raises
    ------
    NotImplementedError
        The site sits in a sequential (iterated) plate.
    """
    return _outermost_first(_stack_plates(site))


def _bijection(site: dict) -> tuple[Transform | None, Any, Exception | None]:
    value = site["value"].detach()
    try:
        with support_errors(site):
            transform = biject_to(site["fn"].support)
            return transform, transform.inv(value).detach(), None
    except ValueError as exc:
        return None, None, exc


class _InitCheck(Messenger):
    """Checks each initial value as soon as it is drawn, before the model uses
    it, and notes the plates whose subsample the model passes explicitly."""

    def __init__(self, init_fn: Callable | None):
        super().__init__()
        self.init_fn = init_fn
        self.explicit: set[str] = set()

    def _pyro_sample(self, msg: dict) -> None:
        if msg["value"] is None or msg["is_observed"]:
            return
        if site_is_subsample(msg):
            self.explicit.add(msg["name"])  # pyro.plate(..., subsample=indices)
        else:
            _check_init(msg, self.init_fn)


def _check_init(site: dict, init_fn: Callable | None) -> None:
    """Check a custom init value's shape and support; the message names the fix."""
    name, fn, value = site["name"], site["fn"], site["value"]
    if getattr(value, "_pyro_custom_init", True) is False:
        return  # produced by a built-in strategy from the prior itself
    who = getattr(init_fn, "__name__", None) or repr(init_fn)
    expected = fn.batch_shape + fn.event_shape
    if value.shape != expected:
        raise ValueError(
            f"init_loc_fn {who} returned a value of shape {tuple(value.shape)} for "
            f"site {name!r}, whose prior has shape {tuple(expected)}; return a "
            f"tensor of shape {tuple(expected)}, e.g. "
            f"init_to_value(values={{{name!r}: torch.zeros({tuple(expected)})}})"
        )
    if fn.support.is_discrete:
        return
    ok = fn.support.check(value)
    if not bool(torch.as_tensor(ok).all()):
        raise ValueError(
            f"init_loc_fn {who} returned a value outside the support of site "
            f"{name!r} ({fn.support}): {value}; return a value inside the support, "
            "or use a built-in strategy such as init_to_median or init_to_feasible"
        )


def _prior_or_feasible(site: dict | None = None) -> Any:
    # An improper (flat) prior has no draw; its support is enough for a start.
    if site is None:
        return _prior_or_feasible
    try:
        return site["fn"].sample().detach()
    except NotImplementedError:
        return init_to_feasible(site)


def trace_prototype(
    model: Callable,
    args: tuple = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    hide_fn: Callable[[dict], bool] = prototype_hide_fn,
    init_fn: Callable | None = None,
) -> Prototype:
    """Run ``model`` once and freeze the facts of its latent sites.

    Parameters
    ----------
    model : callable
        The model, usually already wrapped in an ``InitMessenger``.
    args, kwargs :
        The model's arguments.
    hide_fn : callable
        Which messages to leave out of the prototype trace.
    init_fn : callable, optional
        The init strategy, named in errors about the values it returned. If
        it has a ``prepare(model, args, kwargs)`` method, that is called
        first, with the model as given here.

    Raises
    ------
    NotImplementedError
        A latent site sits in a sequential (iterated) plate.
    ValueError
        A custom init value has the wrong shape or lies outside the support.
    """
    # A strategy that must see the model run first (Pathfinder's mode and
    # curvature) says so with ``prepare(model, args, kwargs)``.
    prepare = getattr(init_fn, "prepare", None)
    if callable(prepare):
        prepare(model, tuple(args), dict(kwargs or {}))
    if init_fn is None:  # a prior draw, or where none can be drawn, feasible
        model = InitMessenger(_prior_or_feasible)(model)
    check = _InitCheck(init_fn)
    blocked = poutine.block(check(model), hide_fn=hide_fn)
    trace = poutine.block(poutine.trace(blocked).get_trace)(*args, **(kwargs or {}))
    sites: dict[str, SiteFacts] = {}
    plates: dict[str, PlateFacts] = {}
    frames: dict[str, Any] = {}
    for name, site in trace.iter_stochastic_nodes():
        stack = _stack_plates(site)
        plates.update((plate.name, plate) for plate in stack)
        frames.update((frame.name, frame) for frame in site["cond_indep_stack"])
        transform, unconstrained, error = _bijection(site)
        sites[name] = SiteFacts(
            name=name,
            fn=site["fn"],
            value=site["value"].detach(),
            plates=_outermost_first(stack),
            infer=dict(site["infer"]),
            transform=transform,
            unconstrained_value=unconstrained,
            transform_error=error,
        )
    whole = full_supports(model, args, kwargs or {}, sites)
    for name, (support, value) in whole.items():
        sites[name] = attrs.evolve(sites[name], full_support=support, full_value=value)
    for name, given in dependent_supports(model, args, kwargs or {}, sites).items():
        sites[name] = attrs.evolve(sites[name], support_given=given)
    explicit = frozenset(check.explicit & set(plates))
    return Prototype(trace, sites, plates, frames, explicit)
