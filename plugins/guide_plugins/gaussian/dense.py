"""The ``dense`` back end: one joint Gaussian over every auxiliary coordinate.

The layout of that Gaussian (:class:`~.dense_layout.DenseLayout`) lives in
:mod:`.dense_layout`, shared with the summaries of the other back ends.
"""

from __future__ import annotations

import pyro
import torch

from .base import AutoGaussian
from .dense_layout import DenseLayout

__all__ = ["AutoGaussianDense"]


class AutoGaussianDense(AutoGaussian):
    """:class:`AutoGaussian` with one dense ``N x N`` precision (``backend="dense"``).

    Cost is that of ``AutoMultivariateNormal``: cubic in the number ``N`` of
    unconstrained latent coordinates, whatever the plates. The joint draw is
    the auxiliary site ``_AutoGaussianDense_latent`` of shape ``(N,)``.
    ``AutoGaussianDense(model)`` equals ``AutoGaussian(model, backend="dense")``.
    """

    def _setup_prototype(self, *args, **kwargs) -> None:
        super()._setup_prototype(*args, **kwargs)
        self._dense_layout = DenseLayout(self._structure)

    def _sample_aux_values(self, *, temperature: float) -> dict[str, torch.Tensor]:
        mvn = self._dense_layout.mvn(self._factor_params)
        if temperature == 0:
            flat = mvn.mean
        elif temperature == 1:
            flat = pyro.sample(self._aux_name, mvn, infer={"is_auxiliary": True})
        else:
            raise ValueError(f"temperature must be 0 or 1, got {temperature!r}")
        return self._dense_layout.unflatten(flat)
