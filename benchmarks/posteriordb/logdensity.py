"""The unconstrained log density of a Pyro model, to check it against Stan's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyro.poutine as poutine
import torch
from torch.distributions import biject_to

__all__ = ["pyro_log_density"]


def pyro_log_density(
    model: Callable, data: Mapping[str, Any], values: Mapping[str, np.ndarray]
) -> float:
    """``log p(x, z) + log |det J|`` at constrained ``values`` of the latents.

    The Jacobian is that of ``biject_to(site support)``, the map every guide
    here (and Stan) uses from the unconstrained space.
    """
    dtype = torch.get_default_dtype()
    tensors = {
        k: torch.as_tensor(np.asarray(v), dtype=dtype) for k, v in values.items()
    }
    trace = poutine.trace(poutine.condition(model, data=tensors)).get_trace(**data)
    total = trace.log_prob_sum()
    for name, value in tensors.items():
        site = trace.nodes[name]
        transform = biject_to(site["fn"].support)
        free = transform.inv(value)
        total = total + transform.log_abs_det_jacobian(free, value).sum()
    return float(total)
