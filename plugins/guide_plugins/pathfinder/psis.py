"""Pareto-smoothed importance sampling: smooth the largest weights, resample.

Vehtari, Simpson, Gelman, Yao & Gabry, "Pareto smoothed importance sampling"
(2015-2024): the ``M = ceil(min(S / 5, 3 sqrt(S)))`` largest weights are
replaced by the expected order statistics of a generalized Pareto distribution
fitted to them, which bounds the variance that a few huge weights would add.
"""

from __future__ import annotations

import math

import torch
from pyro.ops.stats import fit_generalized_pareto

__all__ = ["psis_smooth"]

# log weights that all lie within this of each other are equal up to rounding
_FLAT = 1e-9


def psis_smooth(log_weights: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Return ``(smoothed log weights, k-hat)``; NaN weights count as zero.

    ``k-hat`` is ``inf`` when fewer than five tail weights are distinct (so
    no tail can be fitted); the weights are then returned unsmoothed. Weights
    equal to rounding (an exact Gaussian) need no smoothing: ``k-hat`` is
    ``-inf``, as for exactly equal weights.
    """
    lw = torch.nan_to_num(log_weights.double(), nan=-math.inf)
    num = lw.numel()
    finite = torch.isfinite(lw)
    if not bool(finite.any()):
        return lw, math.inf
    lw = lw - lw[finite].max()
    if bool(finite.all()) and float(lw.min()) > -_FLAT:
        return lw, -math.inf
    tail = int(math.ceil(min(0.2 * num, 3.0 * math.sqrt(num))))
    order = lw.argsort()
    tail_idx = order[-tail:]
    threshold = lw[order[-(tail + 1)]]
    exceed = lw[tail_idx].exp() - threshold.exp()
    if int((exceed > 0).sum()) < 5 or not math.isfinite(float(threshold)):
        return lw, math.inf
    k, sigma = fit_generalized_pareto(exceed.clamp_min(0))
    k, sigma = float(k), float(sigma)
    probs = (torch.arange(1, tail + 1, dtype=torch.float64) - 0.5) / tail
    if abs(k) < 1e-8:
        quantiles = -sigma * torch.log1p(-probs)
    else:
        quantiles = sigma / k * ((1 - probs) ** (-k) - 1)
    smoothed = lw.clone()
    smoothed[tail_idx] = torch.log(threshold.exp() + quantiles).clamp(max=0.0)
    return smoothed, k
