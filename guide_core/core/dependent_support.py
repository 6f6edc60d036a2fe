"""Supports that depend on other latent sites: ``beta ~ Uniform(0, 1 - alpha)``.

Stan writes ``real<lower=0, upper=1 - alpha1> beta1;`` (posteriordb's GARCH
models), and a Pyro model the same constraint as a support computed from
another site's value. A guide that fixes each site's bijection when it traces
its prototype (every autoguide, Pyro's included) maps ``beta1`` onto the
interval of the prototype's ``alpha1`` for every draw: draws of ``alpha1``
above it get values of ``beta1`` outside the model's support, and the
posterior is wrong.

So at setup :func:`dependent_supports` finds the sites whose support moves
when the other latent values move (one more model run, made only where a
support has tensor bounds). During a guide call, :func:`transform_of` gives
such a site the bijection onto its support *given the values the guide has
already drawn*, by running the model, conditioned on them, up to that site.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch.distributions import Transform, biject_to

from .init_messenger import unwrap_init
from .subsample_support import _all_tensors

__all__ = ["dependent_supports", "guide_values", "record_value", "transform_of"]

_VALUES: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "guide_core_guide_values", default=None
)


class _Reached(Exception):
    pass


class _SupportSpy(Messenger):
    """Reads one site's support, then stops the model; notes a latent site
    before it whose value was not given (its support would be a guess)."""

    def __init__(self, name: str, given: Mapping[str, torch.Tensor]):
        super().__init__()
        self.name, self.given, self.support = name, given, None
        self.missing: list[str] = []

    def _pyro_sample(self, msg: dict) -> None:
        if msg["name"] == self.name:
            self.support = msg["fn"].support
            raise _Reached
        if not msg["is_observed"] and msg["name"] not in self.given:
            self.missing.append(msg["name"])


def _support_in(model: Callable, args: tuple, kwargs: Mapping, name: str) -> Callable:
    # without the guide's init strategy, which would draw the site itself
    # (batched by the values given) before the spy reads its support
    model = unwrap_init(model)

    def support_given(values: Mapping[str, torch.Tensor]) -> Any:
        """The support of the site given ``values``; None where a latent
        site before it is not among them."""
        spy = _SupportSpy(name, values)
        conditioned = poutine.condition(spy(model), data=dict(values))
        try:
            poutine.block(conditioned)(*args, **kwargs)
        except _Reached:
            pass
        return None if spy.missing else spy.support

    return support_given


def _same(a: Any, b: Any) -> bool:
    ta, tb = _all_tensors(a), _all_tensors(b)
    if type(a) is not type(b) or len(ta) != len(tb):
        return False
    return all(x.shape == y.shape and torch.allclose(x, y) for x, y in zip(ta, tb))


def dependent_supports(
    model: Callable, args: tuple, kwargs: Mapping[str, Any], sites: Mapping
) -> dict[str, Callable[[Mapping[str, torch.Tensor]], Any]]:
    """The sites whose support moves with other latent values, each with a
    function from the values of the sites before it to its support.

    Every latent value is moved by 0.5 in its unconstrained space and the
    model run once more on the moved values; a support with tensor bounds
    that changed depends on them. A model that cannot run so (or a site in a
    subsampled plate, whose support :mod:`.subsample_support` handles) is
    left as it was.
    """
    candidates = [
        name
        for name, site in sites.items()
        if site.transform is not None
        and site.full_support is None
        and not site.is_discrete
        and _all_tensors(site.support)
        and not any(plate.subsampled for plate in site.plates)
    ]
    if not candidates:
        return {}
    moved = {}
    for name, site in sites.items():
        if site.transform is None:
            moved[name] = site.value
        else:
            moved[name] = site.transform(site.unconstrained_value + 0.5).detach()
    try:
        with torch.no_grad():
            conditioned = poutine.condition(model, data=moved)
            trace = poutine.block(poutine.trace(conditioned).get_trace)(*args, **kwargs)
    except Exception:  # noqa: BLE001 - a model that cannot run so: as before
        return {}
    found = {}
    for name in candidates:
        node = trace.nodes.get(name)
        if node is not None and not _same(node["fn"].support, sites[name].support):
            found[name] = _support_in(model, args, kwargs, name)
    return found


@contextlib.contextmanager
def guide_values() -> Iterator[dict]:
    """Collect the constrained values a guide call draws (nested calls share
    the outermost collection)."""
    current = _VALUES.get()
    if current is not None:
        yield current
        return
    token = _VALUES.set({})
    try:
        yield _VALUES.get()
    finally:
        _VALUES.reset(token)


def record_value(name: str, value: torch.Tensor) -> None:
    """Note a site's constrained value in the current guide call, if any."""
    current = _VALUES.get()
    if current is not None:
        current[name] = value


def transform_of(site: Any) -> Transform:
    """The bijection onto ``site``'s support: for a dependent support, the
    one given the values drawn so far in this guide call; else the site's
    own (:meth:`~guide_core.core.prototype.SiteFacts.require_transform`)."""
    support_given = getattr(site, "support_given", None)
    current = _VALUES.get()
    if support_given is None or not current:
        return site.require_transform()
    try:
        support = support_given(current)
    except Exception:  # noqa: BLE001 - a value before it was not drawn here
        support = None
    return site.require_transform() if support is None else biject_to(support)
