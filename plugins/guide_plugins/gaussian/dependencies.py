"""Which latent sites each site's density depends on: the AutoGaussian's probe.

The probe tracks *provenance*: every sample site's value is wrapped in a
tensor that remembers the site's name, the model runs on those values, and
the names that reach a site's ``log_prob`` are the latents it depends on.

Values are drawn first, by an ordinary run of the model, and only replayed
under provenance tracking. Drawing under provenance tracking instead (as
``pyro.infer.inspect.get_dependencies`` does) breaks every distribution that
draws through ``tensor.new(shape)`` (``Exponential``, ``Cauchy``,
``HalfCauchy``, ...) when a parameter comes from another latent: the
provenance wrapper reads the shape as data, so ``x ~ Exponential(s)`` gets a
value of shape ``(0,)`` (or ``(1,)`` in a plate), which the probe then skips
as empty or misplaces; the sites that depend on ``x`` lose that dependency.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer.inspect import TrackProvenance, is_sample_site
from pyro.ops.provenance import get_provenance

__all__ = ["prior_dependencies"]


def prior_dependencies(
    model: Callable,
    args: tuple = (),
    kwargs: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, set]]:
    """Return ``{site: {upstream: set()}}`` for every sample site of ``model``.

    Each site maps to itself and to the earlier latent sites its density
    depends on (the ``"prior_dependencies"`` of
    ``pyro.infer.inspect.get_dependencies``, without its flaw; see the
    module). Neither the global random stream nor the param store is touched
    beyond what the model's own ``pyro.param`` calls do.

    Parameters
    ----------
    model : callable
        A Pyro model.
    args : tuple
        Its positional arguments.
    kwargs : dict, optional
        Its keyword arguments.
    """
    kwargs = {} if kwargs is None else dict(kwargs)
    with torch.random.fork_rng(), torch.no_grad(), pyro.validation_enabled(False):
        values = poutine.trace(model).get_trace(*args, **kwargs)
        with TrackProvenance():
            replayed = poutine.replay(model, trace=values)
            trace = poutine.trace(replayed).get_trace(*args, **kwargs)
    sites = [msg for msg in trace.nodes.values() if is_sample_site(msg)]
    deps: dict[str, dict[str, set]] = {
        msg["name"]: {msg["name"]: set()} for msg in sites
    }
    with torch.no_grad():
        for i, site in enumerate(sites):
            upstreams = [
                u["name"]
                for u in sites[:i]
                if not u["is_observed"] and u["value"].numel()
            ]
            if not upstreams:
                continue
            provenance = get_provenance(site["fn"].log_prob(site["value"]))
            for name in upstreams:
                if name in provenance:
                    deps[site["name"]][name] = set()
    return deps
