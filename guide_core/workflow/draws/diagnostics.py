"""How good is a fitted guide? The PSIS k-hat, and where a non-finite loss comes from.

The k-hat (Yao, Vehtari, Simpson & Gelman 2018, "Yes, but did it work?") is
the shape of a generalized Pareto distribution fitted to the largest importance
weights ``p(x, z) / q(z)`` of draws ``z`` from the guide ``q``. Below 0.5 the
guide is a good approximation of the posterior; from 0.5 to 0.7 it is usable
with care; above 0.7 importance weights have (close to) infinite variance and
the guide misses important parts of the posterior.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from pyro.ops.stats import fit_generalized_pareto
from pyro.poutine.trace_struct import Trace

from ...core.draws import (
    NotVectorized,
    default_model,
    is_latent,
    over_draws,
    paired_traces,
    per_draw,
)

__all__ = ["KHat", "find_nonfinite", "psis_khat"]

MIN_SAMPLES = 50


def _verdict(value: float) -> str:
    if value < 0.5:
        return "good"
    if value <= 0.7:
        return "ok"
    return "bad"  # above 0.7, and also inf / nan


@attrs.frozen
class KHat:
    """A PSIS k-hat and what it says about the guide.

    Attributes
    ----------
    value : float
        The estimated Pareto shape ``k``; ``inf`` when it cannot be estimated
        because the guide has no density (a point mass such as ``AutoDelta``)
        or too few draws have a non-zero weight.
    num_samples : int
        The number of draws from the guide it was estimated from.
    note : str
        Why the value is not an estimate, when it is not.
    verdict : str
        ``"good"`` (below 0.5), ``"ok"`` (0.5 to 0.7) or ``"bad"`` (above 0.7).
    """

    value: float
    num_samples: int
    note: str = ""
    verdict: str = attrs.field(
        init=False, default=attrs.Factory(lambda s: _verdict(s.value), takes_self=True)
    )

    def __str__(self) -> str:
        note = f": {self.note}" if self.note else ""
        return f"k-hat {self.value:.2f} ({self.verdict}{note})"


def _per_draw_sum(
    log_prob: torch.Tensor, n: int, dim: int | None, probe: torch.Tensor
) -> torch.Tensor:
    """Sum a site's log-density over everything but the draws: shape ``(n,)``."""
    if dim is None:
        return log_prob.sum().reshape(1)
    if log_prob.dim() >= -dim:
        lead = log_prob.shape[: log_prob.dim() + dim]
        if lead.numel() != 1:
            raise NotVectorized(f"log_prob shape {tuple(log_prob.shape)}")
        right = tuple(range(dim + 1, 0))
        total = (log_prob.sum(right) if right else log_prob).reshape(-1)
        if total.numel() == n:
            return total
    total = log_prob.sum().reshape(1)
    if not torch.allclose(total, probe.reshape(1), equal_nan=True):
        raise NotVectorized(f"log_prob shape {tuple(log_prob.shape)}: no draw dim")
    return total.expand(n)


def _weights_collector(model_trace: Trace, guide_trace: Trace) -> Callable:
    """Collect per draw the log weight ``log p(x, z) - log q(z)`` and, for each
    continuous latent site, a fingerprint of its draw (to spot point masses)."""
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    guided = {n for n, s in guide_trace.nodes.items() if is_latent(s)}
    # Latent model sites the guide does not cover are drawn from the model
    # itself: their density cancels and is left out of the weight.
    model_sites = {
        name: site["log_prob"].sum()
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample" and (site["is_observed"] or name in guided)
    }
    guide_sites = {
        name: site["log_prob"].sum()
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }
    continuous = {
        name: site["value"]
        for name, site in model_trace.nodes.items()
        if name in guided
        and not getattr(site["fn"].support, "is_discrete", False)
        and site["value"].is_floating_point()
    }

    def collect(mt: Trace, gt: Trace, n: int, dim: int | None) -> dict:
        mt.compute_log_prob()
        gt.compute_log_prob()
        zero = torch.zeros(n, dtype=torch.float64)
        log_p, log_q = zero, zero
        for name, probe in model_sites.items():
            lp = _per_draw_sum(mt.nodes[name]["log_prob"], n, dim, probe)
            log_p = log_p + lp.double()
        for name, probe in guide_sites.items():
            lq = _per_draw_sum(gt.nodes[name]["log_prob"], n, dim, probe)
            log_q = log_q + lq.double()
        out = {"": log_p - log_q}
        for name, probe in continuous.items():
            value = per_draw(mt.nodes[name]["value"], probe.shape, n, dim, probe)
            out[name] = value.reshape(n, -1).double().sum(-1)
        return out

    return collect


def pareto_khat(log_weights: torch.Tensor) -> tuple[float, str]:
    """Return ``(k, note)`` from log importance weights, per PSIS.

    The generalized Pareto distribution is fitted (Zhang & Stephens 2009) to
    the exceedances of the ``M = ceil(min(S / 5, 3 sqrt(S)))`` largest of ``S``
    weights over the next largest one (Vehtari et al., "Pareto smoothed
    importance sampling").
    """
    lw = log_weights.double().reshape(-1)
    finite = lw[torch.isfinite(lw)]
    num = lw.numel()
    if finite.numel() == num and float(finite.max() - finite.min()) < 1e-9:
        # equal up to rounding (an exact guide): no tail to fit
        return -math.inf, "all importance weights are equal"
    lw = lw - lw.max()
    tail_size = int(math.ceil(min(0.2 * num, 3.0 * math.sqrt(num))))
    ordered = lw.sort().values
    threshold = ordered[-(tail_size + 1)]
    exceedances = ordered[-tail_size:].exp() - threshold.exp()
    exceedances = exceedances[exceedances > 0]
    if exceedances.numel() < 5:
        nonzero = int(torch.isfinite(lw).sum())
        return math.inf, (
            f"only {exceedances.numel()} distinct tail weights ({nonzero} of {num} "
            "draws have a non-zero weight); increase num_samples"
        )
    k, _ = fit_generalized_pareto(exceedances)
    return float(k), ""


def psis_khat(
    model: Callable | None,
    guide: Callable,
    *args: Any,
    num_samples: int = 500,
    **kwargs: Any,
) -> KHat:
    """Estimate the PSIS k-hat of ``guide`` as an approximation of the posterior.

    Parameters
    ----------
    model : callable or None
        The model; ``None`` for the one the guide was built for.
    guide : callable
        The fitted guide.
    *args, **kwargs :
        The model's arguments.
    num_samples : int
        Draws from the guide (at least 50); the estimate's noise shrinks
        slowly, so use several hundred for a verdict near a threshold.

    Returns
    -------
    KHat
        The value, its verdict (``good`` < 0.5, ``ok`` up to 0.7, ``bad``
        above) and, when the value is not an estimate, why.

    Raises
    ------
    ValueError
        If some importance weights are NaN; the message names the site.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int):
        raise TypeError(f"'num_samples' must be an int such as 500: {num_samples!r}")
    if num_samples < MIN_SAMPLES:
        raise ValueError(
            f"'num_samples' must be >= {MIN_SAMPLES} to estimate a k-hat (the tail "
            f"fit needs at least 10 weights): {num_samples!r}"
        )
    model = default_model(guide) if model is None else model
    draws = over_draws(model, guide, num_samples, args, kwargs, _weights_collector)
    log_weights = draws.pop("")
    for name, fingerprint in draws.items():
        if bool((fingerprint == fingerprint[0]).all()):
            return KHat(
                math.inf,
                num_samples,
                f"the guide is a point mass at site {name!r} (as AutoDelta is), so "
                "it has no importance weights",
            )
    nan = int(torch.isnan(log_weights).sum())
    if nan:
        where = find_nonfinite(model, guide, args, kwargs)
        raise ValueError(
            f"the log importance weights are nan for {nan} of {num_samples} draws"
            + (f"; {where}" if where else "")
        )
    value, note = pareto_khat(log_weights)
    return KHat(value, num_samples, note)


def _site_problem(label: str, name: str, site: Mapping[str, Any]) -> str | None:
    value = site["value"]
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            return (
                f"site {name!r} in the {label} has a non-finite value "
                f"({int(bad.sum())} of {value.numel()} elements)"
            )
    if site["type"] != "sample":
        return None
    try:
        log_prob = site["fn"].log_prob(value)
    except (ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"site {name!r} in the {label}: log_prob failed: {first}"
    bad = ~torch.isfinite(log_prob)
    if bool(bad.any()):
        kind = "nan" if bool(torch.isnan(log_prob).any()) else "infinite"
        return (
            f"site {name!r} in the {label} has a {kind} log_prob "
            f"({int(bad.sum())} of {log_prob.numel()} elements; a value outside "
            "its support or a degenerate parameter such as a scale of 0?)"
        )
    return None


@torch.no_grad()
def find_nonfinite(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: Mapping[str, Any],
    tries: int = 10,
) -> str | None:
    """Run guide and model and describe the first site with a non-finite value
    or log-density, or return None if ``tries`` runs find none."""
    for _ in range(tries):
        try:
            model_trace, guide_trace = paired_traces(model, guide, args, kwargs)
        except Exception as exc:  # noqa: BLE001 - describing, not handling
            first = str(exc).splitlines()[0] if str(exc) else ""
            return f"running the guide and model raised {type(exc).__name__}: {first}"
        for label, trace in (("guide", guide_trace), ("model", model_trace)):
            for name, site in trace.nodes.items():
                if site["type"] not in ("sample", "param"):
                    continue
                problem = _site_problem(label, name, site)
                if problem is not None:
                    return problem
    return None
