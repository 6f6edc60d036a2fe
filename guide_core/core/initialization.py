"""Initialization strategies: where an automatic guide starts its search.

An *init strategy* takes one Pyro sample-site message (a ``dict`` with at
least ``"name"`` and ``"fn"``) and returns the site's initial *constrained*
value. Called with ``site=None`` it instead returns a strategy with the given
options bound, e.g. ``init_to_median(num_samples=31)``. Guides run the model
once under :class:`~.init_messenger.InitMessenger` to build their
prototype trace.

Each strategy makes exactly the random draws, in the same order, that Pyro's
strategy of the same name makes, so a fixed seed gives the same start in
either library. Values computed from the prior carry ``_pyro_custom_init =
False`` (as Pyro's do) so later checks can tell them from user values.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from pyro.distributions.torch import Independent
from pyro.distributions.torch_distribution import MaskedDistribution
from torch.distributions import transform_to

# the handler lives beside the strategies in Pyro's module too: importable here
from .init_messenger import InitMessenger, support_errors, unwrap_init

__all__ = [
    "InitMessenger",
    "builtin_strategies",
    "init_to_feasible",
    "init_to_generated",
    "init_to_mean",
    "init_to_median",
    "init_to_sample",
    "init_to_uniform",
    "init_to_value",
    "support_errors",
    "unwrap_init",
]

InitStrategy = Callable[[dict], torch.Tensor]
Result = torch.Tensor | InitStrategy


def _from_prior(value: torch.Tensor) -> torch.Tensor:
    value._pyro_custom_init = False  # derived from the prior, not user-supplied
    return value


def _statistic_or_fallback(
    site: dict, what: str, statistic: Callable, errors: tuple, fallback: Any
) -> torch.Tensor:
    # Use a statistic of the prior unless it fails with one of ``errors``, is
    # NaN, or lies outside the support; then defer to ``fallback``.
    fn = site["fn"]
    try:
        value = statistic(fn)
        if not bool(torch.isfinite(value).all()):
            _warn_not_finite(site["name"], what, value, fallback)
            raise ValueError("not finite")
        if hasattr(fn, "_validate_sample"):  # raises ValueError outside support
            fn._validate_sample(value)
        return _from_prior(value)
    except errors:
        pass
    if fallback is None:
        name = site["name"]
        raise ValueError(
            f"init_to_{what}: the prior {what} of site {name!r} is unusable (NaN, "
            "outside the support or not implemented) and fallback=None; pass a "
            "fallback strategy such as fallback=init_to_feasible, or use "
            f"init_to_value(values={{{name!r}: ...}})"
        )
    return fallback(site)


def _warn_not_finite(name: str, what: str, value: torch.Tensor, fallback: Any) -> None:
    # An infinite (HalfCauchy) or undefined (Cauchy) statistic would start the
    # guide at inf or NaN; say which site falls back (Python shows it once).
    if fallback is not None:
        kind = "undefined (NaN)" if bool(torch.isnan(value).any()) else "infinite"
        using = getattr(getattr(fallback, "func", fallback), "__name__", fallback)
        msg = f"the prior {what} of site {name!r} is {kind}; starting it with {using}"
        warnings.warn(f"init_to_{what}: {msg} instead", UserWarning, stacklevel=4)


def _innermost_event_is_vector(fn: Any) -> bool:
    # Look through reinterpreting wrappers: Normal(...).to_event(1) counts as
    # univariate, a (masked) Dirichlet does not.
    while isinstance(fn, (Independent, MaskedDistribution)):
        fn = fn.base_dist
    return any(size > 1 for size in fn.event_shape)


def _in_unconstrained_space(site: dict, make: Callable) -> torch.Tensor:
    # One prior draw fixes the unconstrained shape; ``make`` fills that shape.
    fn = site["fn"]
    to_support = transform_to(fn.support)
    try:
        free = to_support.inv(fn.sample().detach())
    except NotImplementedError:
        # An improper prior (ImproperUniform, Stan's flat priors) cannot be
        # drawn from; its support and shape are all a start needs.
        shape = to_support.inverse_shape(fn.batch_shape + fn.event_shape)
        free = torch.zeros(shape)
    return _from_prior(to_support(make(free)))


def init_to_feasible(site: dict | None = None) -> Result:
    """Start where unconstrained zero maps to in the site's support.

    Only the support matters, never the prior's parameters, so this works for
    any continuous site; it is the last resort of the other strategies.
    """
    if site is None:
        return init_to_feasible
    return _in_unconstrained_space(site, torch.zeros_like)


def init_to_sample(site: dict | None = None) -> Result:
    """Start at one random draw from the prior."""
    if site is None:
        return init_to_sample
    return _from_prior(site["fn"].sample().detach())


def init_to_median(
    site: dict | None = None,
    num_samples: int = 15,
    *,
    fallback: InitStrategy | None = init_to_feasible,
) -> Result:
    """Start at the element-wise median of ``num_samples`` prior draws.

    The median is robust to heavy tails, hence a safe default. A site whose
    innermost distribution has a vector event (e.g. Dirichlet) has no median
    inside its support, so it gets :func:`init_to_feasible` instead.

    Parameters
    ----------
    num_samples : int
        How many prior draws to take the median of.
    fallback : callable or None
        Used when sampling fails or the median is NaN or outside the support;
        None makes that case a ``ValueError`` naming the site.
    """
    if site is None:
        return functools.partial(
            init_to_median, num_samples=num_samples, fallback=fallback
        )
    if _innermost_event_is_vector(site["fn"]):
        return init_to_feasible(site)
    return _statistic_or_fallback(
        site,
        "median",
        lambda fn: fn.sample(sample_shape=(num_samples,)).median(dim=0).values,
        (RuntimeError, ValueError),  # RuntimeError covers NotImplementedError
        fallback,
    )


def init_to_mean(
    site: dict | None = None,
    *,
    fallback: InitStrategy | None = init_to_median,
) -> Result:
    """Start at the prior mean, which is deterministic and cheap.

    Parameters
    ----------
    fallback : callable or None
        Used when ``.mean`` raises ``NotImplementedError`` (LKJCholesky), is not
        finite (NaN for Cauchy, inf for HalfCauchy; a warning names the site)
        or lies outside the support (Bernoulli); None makes that case a
        ``ValueError`` naming the site.
    """
    if site is None:
        return functools.partial(init_to_mean, fallback=fallback)
    return _statistic_or_fallback(
        site,
        "mean",
        lambda fn: fn.mean.detach(),
        (NotImplementedError, ValueError),
        fallback,
    )


def init_to_uniform(site: dict | None = None, radius: float = 2.0) -> Result:
    """Start at a uniform draw from ``(-radius, radius)`` in unconstrained space.

    This spreads restarts around the feasible point without trusting the
    prior's location or scale.

    Parameters
    ----------
    radius : float
        Half-width of the unconstrained box.
    """
    if site is None:
        return functools.partial(init_to_uniform, radius=radius)
    return _in_unconstrained_space(
        site, lambda u: torch.rand_like(u) * (2 * radius) - radius
    )


def init_to_value(
    site: dict | None = None,
    values: Mapping[str, torch.Tensor] | None = None,
    *,
    fallback: InitStrategy | None = init_to_uniform,
) -> Result:
    """Start at user-given values, keyed by site name.

    The mapping is read at call time, so later changes to it are seen. Values
    are returned unmarked, so later checks treat them as user-supplied.

    Parameters
    ----------
    values : mapping of str to torch.Tensor, optional
        Initial constrained values by site name; None means none.
    fallback : callable or None
        Used for sites missing from ``values``; None makes a missing site a
        ``ValueError`` naming it.
    """
    if values is None:
        values = {}
    if site is None:
        return functools.partial(init_to_value, values=values, fallback=fallback)
    name = site["name"]
    if name in values:
        return values[name]
    if fallback is None:
        raise ValueError(
            f"init_to_value: no value for site {name!r} and fallback=None; "
            f"pass values={{{name!r}: ...}} or a fallback strategy"
        )
    return fallback(site)


class _Regenerating:
    # Asks ``generate`` for a fresh strategy whenever the site that opened the
    # current model run is seen again (only that one name is remembered).

    def __init__(self, generate: Callable[[], InitStrategy]):
        self.generate = generate
        self._current: InitStrategy | None = None
        self._opened_by: str | None = None

    def __call__(self, site: dict) -> torch.Tensor:
        if self._current is None or site["name"] == self._opened_by:
            self._current = self.generate()
            self._opened_by = site["name"]
        return self._current(site)


def _generate_uniform() -> InitStrategy:
    return init_to_uniform


def init_to_generated(
    site: dict | None = None,
    generate: Callable[[], InitStrategy] = _generate_uniform,
) -> Result:
    """Use a strategy made afresh by ``generate`` once per model execution.

    Each run can start somewhere new (e.g. ``init_to_value`` over a dict of
    random draws made together) while all its sites share one strategy.
    With ``site=None`` this returns a new stateful strategy.

    Parameters
    ----------
    generate : callable
        Takes no arguments and returns an init strategy.
    """
    strategy = _Regenerating(generate)
    return strategy if site is None else strategy(site)


def builtin_strategies() -> dict[str, tuple[Callable[..., Any], str]]:
    """Return the built-in strategies as ``{name: (strategy, summary)}``.

    The core's registry registers these so that ``init_loc_fn="median"`` works.
    """
    return {
        "feasible": (init_to_feasible, "Unconstrained zero mapped into the support."),
        "sample": (init_to_sample, "One random draw from the prior."),
        "median": (init_to_median, "Median of prior draws; feasible for vectors."),
        "mean": (init_to_mean, "Prior mean, else the median when it is unusable."),
        "uniform": (init_to_uniform, "Uniform in (-radius, radius), unconstrained."),
        "value": (init_to_value, "User-given values by site name, else uniform."),
        "generated": (init_to_generated, "A strategy generated once per model run."),
    }
