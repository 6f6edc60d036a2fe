"""Real posteriors from posteriordb, written as Pyro models, with reference draws.

posteriordb (https://github.com/stan-dev/posteriordb, see ``ATTRIBUTION.md``)
holds Stan models, their data and reference posterior draws from long NUTS
runs. Each posterior here is one module in ``models/`` that holds:

- ``POSTERIOR``: the posteriordb name, e.g. ``"sblrc-blr"``;
- ``model(**data)``: the Stan model as a Pyro model, with one sample site per
  Stan parameter, of the same name, shape and constraint;
- ``stan_log_density(params, data)``: Stan's log density on the unconstrained
  space (Jacobians included), written independently in NumPy/SciPy, taking
  the *constrained* values as NumPy arrays; used only to verify ``model``;
- optionally ``EXCLUDE``: why the Gaussian-family targets do not apply
  (a funnel, a multimodal reference), or ``None``.

``data/<short>.json.gz`` holds the data and a thinned subset of the reference
draws (constrained, shaped like the Pyro sites), so nothing is fetched at run
time.
"""

from __future__ import annotations

import gzip
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

__all__ = ["SHORT_NAMES", "Posterior", "load", "names"]

_HERE = Path(__file__).parent

#: The posteriors, by short name (the module in ``models/``).
SHORT_NAMES = (
    "eight_schools",
    "kidiq",
    "earnings",
    "mesquite",
    "nes",
    "arK",
    "garch11",
    "gp_pois_regr",
    "diamonds",
    "kilpisjarvi",
    "sblr",
    "low_dim_gauss_mix",
)


@attrs.frozen
class Posterior:
    """One posteriordb posterior as a Pyro model with reference draws.

    Attributes
    ----------
    short : str
        The short name (``"sblr"``).
    name : str
        The posteriordb name (``"sblrc-blr"``).
    model : callable
        The Pyro model; call it as ``model(**data)``.
    data : dict of str to torch.Tensor or int
        The model's keyword arguments.
    numpy_data : dict of str to numpy.ndarray
        The same data as NumPy arrays, for ``stan_log_density``.
    reference : dict of str to numpy.ndarray
        Reference draws per site, shaped ``(draws, *site_shape)``, constrained.
    stan_log_density : callable
        ``stan_log_density(params, numpy_data) -> float``, Stan's density.
    exclude : str or None
        Why the Gaussian-family targets do not apply here, if they do not.
    """

    short: str
    name: str
    model: Callable[..., Any]
    data: dict[str, Any]
    numpy_data: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]
    stan_log_density: Callable[..., float]
    exclude: str | None = None

    def reference_mean(self) -> dict[str, np.ndarray]:
        """The reference posterior mean of every site."""
        return {k: v.mean(0) for k, v in self.reference.items()}

    def reference_sd(self) -> dict[str, np.ndarray]:
        """The reference posterior standard deviation of every site."""
        return {k: v.std(0, ddof=1) for k, v in self.reference.items()}


def names() -> tuple[str, ...]:
    """The short names of every posterior."""
    return SHORT_NAMES


def _to_torch(value: Any, dtype: torch.dtype) -> Any:
    array = np.asarray(value)
    if array.dtype.kind in "iub" and array.ndim == 0:
        return int(array)
    if array.dtype.kind in "iub":
        return torch.as_tensor(array, dtype=torch.long)
    return torch.as_tensor(array, dtype=dtype)


def load(short: str, dtype: torch.dtype | None = None) -> Posterior:
    """Load one posterior by its short name, its data as ``dtype`` tensors.

    ``dtype`` defaults to torch's default dtype.
    """
    if short not in SHORT_NAMES:
        raise KeyError(
            f"no posterior {short!r} here; available: {', '.join(SHORT_NAMES)}"
        )
    dtype = torch.get_default_dtype() if dtype is None else dtype
    module = importlib.import_module(f"{__name__}.models.{short}")
    with gzip.open(_HERE / "data" / f"{short}.json.gz", "rt") as f:
        stored = json.load(f)
    numpy_data = {k: np.asarray(v) for k, v in stored["data"].items()}
    reference = {k: np.asarray(v, dtype=float) for k, v in stored["reference"].items()}
    data = {k: _to_torch(v, dtype) for k, v in numpy_data.items()}
    return Posterior(
        short=short,
        name=module.POSTERIOR,
        model=module.model,
        data=data,
        numpy_data=numpy_data,
        reference=reference,
        stan_log_density=module.stan_log_density,
        exclude=getattr(module, "EXCLUDE", None),
    )
