"""Drawing from a guide and replaying the model against the draws.

The posterior samples, the PSIS k-hat and the non-finite-loss search all need
the same thing: a guide trace and the model replayed against it, for one draw
or for many. Many draws are taken at once under an outer particle plate when
the model and guide vectorize, and one at a time when they do not, so a model
written with Python control flow on its latents still gets correct results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites, site_is_subsample

from .capture.recorded_draws import recorded_draws
from .init_messenger import unwrap_init

__all__ = [
    "PARTICLE_PLATE",
    "batch_nesting",
    "default_model",
    "PosteriorDraws",
    "draw_sites",
    "is_latent",
    "over_draws",
    "paired_traces",
]

PARTICLE_PLATE = "_guide_core_draws"
# Upper bound on the number of tensor elements one vectorized chunk may hold.
_ELEMENT_BUDGET = 2**24

# collect(model_trace, guide_trace, num_draws, particle_dim) -> {key: tensor}
# with ``num_draws`` on dim 0 of every tensor; particle_dim is None for one draw.
Collect = Callable[[Trace, Trace, int, "int | None"], dict[str, torch.Tensor]]


class NotVectorized(Exception):
    """The vectorized draws are not shaped as independent draws would be."""


def default_model(guide: Callable) -> Callable:
    """Return the model a guide was built for, without its init handler.

    A guide wraps its model in an :class:`~guide_core.InitMessenger` to build
    its prototype; replaying that wrapper would pin every site the guide does
    not cover at its initial value instead of drawing it, so it is removed.
    """
    model = getattr(guide, "model", None)
    if model is None or not callable(model):
        raise TypeError(
            f"{type(guide).__name__} has no 'model' attribute; pass the model "
            "explicitly: model=my_model"
        )
    return unwrap_init(model)


def is_latent(site: Mapping[str, Any]) -> bool:
    """Whether a trace node is a latent sample site (not observed, not auxiliary)."""
    return (
        site["type"] == "sample"
        and not site["is_observed"]
        and not site_is_subsample(site)
        and not site["infer"].get("is_auxiliary", False)
    )


def is_deterministic(site: Mapping[str, Any]) -> bool:
    """Whether a trace node was made by ``pyro.deterministic``."""
    return site["type"] == "sample" and bool(site["infer"].get("_deterministic"))


def paired_traces(
    model: Callable, guide: Callable, args: tuple, kwargs: Mapping[str, Any]
) -> tuple[Trace, Trace]:
    """Run the guide once and the model against it; return ``(model, guide)``
    traces with subsample sites pruned.

    A messenger guide (``GuideMessenger``) runs the model itself; its own pair
    of traces is used, as Pyro's ELBOs do.
    """
    unwrapped = poutine.unwrap(guide)
    if isinstance(unwrapped, Messenger):
        guide(*args, **kwargs)
        model_trace, guide_trace = unwrapped.get_traces()
    else:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        replayed = poutine.replay(model, trace=guide_trace)
        model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
    return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)


def batch_nesting(*traces: Trace) -> int:
    """Return how many batch dims the sample sites of ``traces`` use at most."""
    nesting = 0
    for trace in traces:
        for site in trace.nodes.values():
            if site["type"] != "sample":
                continue
            dims = [-f.dim for f in site["cond_indep_stack"] if f.vectorized]
            nesting = max(nesting, len(getattr(site["fn"], "batch_shape", ())), *dims)
    return nesting


def _elements(*traces: Trace) -> int:
    total = 0
    for trace in traces:
        for site in trace.nodes.values():
            value = site.get("value")
            if site["type"] == "sample" and isinstance(value, torch.Tensor):
                total += value.numel()
    return total


def _one_by_one(
    model: Callable,
    guide: Callable,
    num_draws: int,
    args: tuple,
    kwargs: Mapping[str, Any],
    collect: Collect,
) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {}
    for _ in range(num_draws):
        model_trace, guide_trace = paired_traces(model, guide, args, kwargs)
        for key, value in collect(model_trace, guide_trace, 1, None).items():
            parts.setdefault(key, []).append(value)
    return {key: torch.cat(values) for key, values in parts.items()}


def _vectorized(
    model: Callable,
    guide: Callable,
    num_draws: int,
    dim: int,
    chunk: int,
    args: tuple,
    kwargs: Mapping[str, Any],
    collect: Collect,
) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {}
    done = 0
    while done < num_draws:
        size = min(chunk, num_draws - done)
        with pyro.plate(PARTICLE_PLATE, size, dim=dim):
            model_trace, guide_trace = paired_traces(model, guide, args, kwargs)
        for key, value in collect(model_trace, guide_trace, size, dim).items():
            parts.setdefault(key, []).append(value)
        done += size
    return {key: torch.cat(values) for key, values in parts.items()}


@torch.no_grad()
def over_draws(
    model: Callable,
    guide: Callable,
    num_draws: int,
    args: tuple,
    kwargs: Mapping[str, Any],
    collect: Callable[[Trace, Trace], Collect],
) -> dict[str, torch.Tensor]:
    """Draw ``num_draws`` times from the guide, replaying the model each time.

    Parameters
    ----------
    collect : callable
        Called once with the traces of a first, single draw (the probe, which
        also sets up a guide that has not been called yet); returns the
        function that turns a pair of traces into ``{key: tensor}`` with the
        draws on dim 0. It raises :class:`NotVectorized` when vectorized
        traces do not look like independent draws.

    Returns
    -------
    dict
        ``{key: tensor}`` with ``num_draws`` on dim 0.
    """
    probe_model, probe_guide = paired_traces(model, guide, args, kwargs)
    collector = collect(probe_model, probe_guide)
    dim = -(batch_nesting(probe_model, probe_guide) + 1)
    elements = max(1, _elements(probe_model, probe_guide))
    chunk = max(1, min(num_draws, _ELEMENT_BUDGET // elements))
    if num_draws > 1:
        try:
            return _vectorized(
                model, guide, num_draws, dim, chunk, args, kwargs, collector
            )
        except Exception:  # noqa: BLE001 - one draw at a time re-raises real errors
            pass

    def draw(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return collector(*paired_traces(model, guide, args, kwargs), 1, None)

    recorded = recorded_draws(draw, num_draws, args, kwargs)
    if recorded is not None:
        return recorded
    return _one_by_one(model, guide, num_draws, args, kwargs, collector)


def per_draw(
    value: torch.Tensor,
    shape: torch.Size,
    num_draws: int,
    dim: int | None,
    probe: torch.Tensor,
) -> torch.Tensor:
    """Return ``value`` (one site's value in a trace) as ``(num_draws, *shape)``.

    ``shape`` and ``probe`` are the site's shape and value in a single draw. A
    value without the particle dim is accepted only if it equals ``probe`` (it
    does not depend on the draw, e.g. a deterministic site of the data).

    Raises
    ------
    NotVectorized
        If the vectorized value is not shaped as ``num_draws`` draws would be.
    """
    if dim is None:
        if value.shape != shape:
            raise NotVectorized(f"shape {tuple(value.shape)} != {tuple(shape)}")
        return value.unsqueeze(0)
    trailing = value.shape[value.dim() - len(shape) :] if shape else torch.Size()
    if value.dim() < len(shape) or trailing != shape:
        raise NotVectorized(f"shape {tuple(value.shape)} does not end in {shape}")
    leading = value.shape[: value.dim() - len(shape)].numel()
    if leading == num_draws:
        return value.reshape((num_draws,) + tuple(shape))
    if leading == 1 and torch.equal(value.reshape(shape), probe):
        return value.reshape(shape).expand((num_draws,) + tuple(shape))
    raise NotVectorized(f"shape {tuple(value.shape)} has no dim of {num_draws} draws")


def _check_num_samples(num_samples: Any) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int):
        raise TypeError(f"'num_samples' must be an int such as 1000: {num_samples!r}")
    if num_samples < 1:
        raise ValueError(f"'num_samples' must be >= 1: {num_samples!r}")
    return num_samples


def _values_collector(model_trace: Trace, guide_trace: Trace) -> Callable:
    """Collect every latent and deterministic site of the model, shaped like
    the probe draw ``model_trace``."""
    probe = {
        name: site["value"]
        for name, site in model_trace.nodes.items()
        if is_latent(site) or is_deterministic(site)
    }

    def collect(mt: Trace, gt: Trace, n: int, dim: int | None) -> dict:
        out = {}
        for name, value in probe.items():
            if name not in mt.nodes:
                raise ValueError(
                    f"site {name!r} is missing from a later draw: the model's sites "
                    "change from draw to draw; sample_posterior needs a model with a "
                    "fixed set of sites"
                )
            out[name] = per_draw(mt.nodes[name]["value"], value.shape, n, dim, value)
        return out

    return collect


def draw_sites(
    guide: Callable,
    args: tuple,
    kwargs: Mapping[str, Any],
    *,
    num_samples: int = 1000,
    model: Callable | None = None,
) -> dict[str, torch.Tensor]:
    """Draw ``num_samples`` times from ``guide``; return every latent and
    deterministic site of the model replayed against the draws.

    This is what :func:`guide_core.sample_posterior` and the guides'
    ``sample_posterior`` methods both run.

    Parameters
    ----------
    guide : callable
        A guide; any Pyro guide when ``model`` is given.
    args, kwargs :
        The model's arguments.
    num_samples : int
        The number of draws.
    model : callable, optional
        The model; by default the one the guide was built for.

    Returns
    -------
    dict
        ``{site name: tensor}`` with the draws on dim 0.
    """
    num_samples = _check_num_samples(num_samples)
    if not callable(guide):
        raise TypeError(f"'guide' must be a guide (callable): {guide!r}")
    model = default_model(guide) if model is None else model
    return over_draws(model, guide, num_samples, args, kwargs, _values_collector)


class PosteriorDraws:
    """The ``sample_posterior`` method of :class:`~guide_core.AutoGuide` and
    :class:`~guide_core.AutoMessenger` (a base of both), so a fitted guide
    draws from itself as NumPyro's guides do."""

    def sample_posterior(
        self, *args: Any, num_samples: int = 1000, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Draw ``num_samples`` times; see :func:`guide_core.sample_posterior`.

        Returns
        -------
        dict
            ``{site name: tensor}`` for every latent and deterministic site of
            the model, with the draws on dim 0.
        """
        model = kwargs.pop("model", None)
        return draw_sites(self, args, kwargs, num_samples=num_samples, model=model)
