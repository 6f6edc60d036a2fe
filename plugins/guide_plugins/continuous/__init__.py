"""The ``continuous`` family: one joint posterior over a flat unconstrained latent.

:class:`AutoContinuous` is the abstract base (importable as
``guide_core.AutoContinuous`` for subclassing, not made by name); the
registered guides are :class:`AutoDiagonalNormal`,
:class:`AutoMultivariateNormal`, :class:`AutoLowRankMultivariateNormal` and
:class:`AutoLaplaceApproximation`.
"""

from __future__ import annotations

from collections.abc import Callable

from guide_core import Capabilities, GuideSpec, hookimpl

from .base import AutoContinuous
from .laplace import AutoLaplaceApproximation, LaplaceHessianError
from .lowrank import LowRankAffine
from .normals import (
    AutoDiagonalNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
)

__all__ = [
    "AutoContinuous",
    "AutoDiagonalNormal",
    "AutoLaplaceApproximation",
    "AutoLowRankMultivariateNormal",
    "AutoMultivariateNormal",
    "LaplaceHessianError",
    "LowRankAffine",
    "register_guides",
]

_SUMMARIES = {
    AutoDiagonalNormal: "Diagonal normal over the flat unconstrained latent.",
    AutoMultivariateNormal: "Full-covariance normal over the flat unconstrained "
    "latent (Cholesky factor).",
    AutoLowRankMultivariateNormal: "Low-rank-plus-diagonal normal over the flat "
    "unconstrained latent.",
    AutoLaplaceApproximation: "MAP point over the flat latent; "
    "laplace_approximation() adds the inverse-Hessian covariance.",
}

# AutoLaplaceApproximation trains a point (MAP); its loss is not an ELBO.
_OBJECTIVES = {AutoLaplaceApproximation: "laplace"}


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


@hookimpl
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register the four concrete guides of the family (not the abstract base)."""
    for cls, summary in _SUMMARIES.items():
        register(
            GuideSpec(
                name=_snake(cls.__name__),
                factory=cls,
                family="continuous",
                summary=summary,
                capabilities=Capabilities(jit=True),
                objective=_OBJECTIVES.get(cls, "elbo"),
            )
        )
