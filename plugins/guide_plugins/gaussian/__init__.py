"""The ``gaussian`` family: :class:`AutoGaussian` and its back ends.

``AutoGaussian(model, backend=name)`` builds the class the back end ``name``
registered: ``"dense"`` (:class:`AutoGaussianDense`), ``"funsor"``
(:class:`AutoGaussianFunsor`, needs the ``funsor`` extra) or ``"sparse"``
(:class:`AutoGaussianSparse`, ours: batched over plates in pure torch). Other
plugins add back ends through the ``register_gaussian_backends`` hook.
"""

from __future__ import annotations

from collections.abc import Callable

from guide_core import BackendSpec, Capabilities, GuideSpec, hookimpl

from .base import AutoGaussian
from .dense import AutoGaussianDense
from .funsor_backend import INSTALL_HINT, AutoGaussianFunsor
from .sparse import AutoGaussianSparse

__all__ = [
    "AutoGaussian",
    "AutoGaussianDense",
    "AutoGaussianFunsor",
    "AutoGaussianSparse",
    "register_gaussian_backends",
    "register_guides",
]


@hookimpl
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register ``auto_gaussian``."""
    register(
        GuideSpec(
            name="auto_gaussian",
            factory=AutoGaussian,
            family="gaussian",
            summary=(
                "Joint Gaussian with the model's conditional independences; "
                "back ends dense, funsor and sparse (linear in plate sizes)."
            ),
            capabilities=Capabilities(subsample=False, jit=True),
            backends=("dense", "funsor", "sparse"),
        )
    )


@hookimpl
def register_gaussian_backends(register: Callable[[BackendSpec], None]) -> None:
    """Register the ``dense``, ``funsor`` and ``sparse`` back ends."""
    register(
        BackendSpec(
            name="dense",
            factory=AutoGaussianDense,
            summary="One dense precision matrix; cubic in the number of latents.",
        )
    )
    register(
        BackendSpec(
            name="funsor",
            factory=AutoGaussianFunsor,
            summary="Gaussian tensor variable elimination with funsor.",
            extras=("funsor",),
            install_hint=INSTALL_HINT,
        )
    )
    register(
        BackendSpec(
            name="sparse",
            factory=AutoGaussianSparse,
            summary="Batched block Cholesky over nested plates; linear in plate sizes.",
        )
    )
