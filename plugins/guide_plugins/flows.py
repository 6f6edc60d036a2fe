"""The ``flows`` family: normalizing-flow posteriors over the flat latent.

:class:`AutoNormalizingFlow` pushes a standard normal over the flat
unconstrained latent of :class:`~guide_plugins.continuous.AutoContinuous`
through a learnable bijection; :class:`AutoIAFNormal` is the case whose
bijection is a chain of affine autoregressive (IAF) transforms.

A flow's marginals have no closed form, so :meth:`median` and
:meth:`quantiles` are estimated from ``num_summary_samples`` (default 1000)
posterior draws, elementwise in the unconstrained space and then mapped to
each site's support; the draws come from a fork of the random state seeded
with ``guide.summary_seed``, so summaries never perturb training and depend
on the parameters alone. Raise ``guide.num_summary_samples`` for
tighter estimates (the Monte Carlo error of a median is about
``1.25 * sd / sqrt(num_summary_samples)``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import affine_autoregressive, iterated
from torch.distributions import Transform

from guide_core import Capabilities, GuideSpec, hookimpl, init_to_feasible
from guide_plugins.continuous import AutoContinuous

__all__ = ["AutoIAFNormal", "AutoNormalizingFlow", "register_guides"]


class AutoNormalizingFlow(AutoContinuous):
    """A standard normal pushed through a learnable bijection, over the flat latent.

    The bijection is built on the first call as ``init_transform_fn(latent_dim)``
    and kept as the submodule ``transform``, so a
    :class:`~pyro.distributions.TransformModule` has its parameters in the param
    store under ``<ClassName>.transform...``. The guide does not depend on the
    model's arguments. Medians and quantiles are sampled (see the module
    docstring).

    Parameters
    ----------
    model : callable
        A Pyro model.
    init_transform_fn : callable
        ``init_transform_fn(latent_dim)`` returns a ``Transform`` (or a
        ``TransformModule`` if it has trainable parameters) on vectors of that
        length.
    """

    def __init__(self, model: Callable, init_transform_fn: Callable[[int], Transform]):
        if not callable(init_transform_fn):
            raise TypeError(
                "'init_transform_fn' must be callable as init_transform_fn(latent_dim)"
                " and return a Transform, e.g. functools.partial(iterated, 2, "
                f"block_autoregressive): {init_transform_fn!r}"
            )
        super().__init__(model, init_loc_fn=init_to_feasible)
        self._init_transform_fn = init_transform_fn
        self.transform = None
        self._prototype_tensor = torch.tensor(0.0)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        if self.transform is None:  # now, so a state loaded before a call applies
            self._build_transform()

    def _build_transform(self) -> None:
        transform = self._init_transform_fn(self.latent_dim)
        if not isinstance(transform, Transform):
            raise TypeError(
                f"init_transform_fn({self.latent_dim}) returned {transform!r}, not a "
                "torch.distributions.Transform; return a Transform or TransformModule"
            )
        self.transform = transform

    def _like(self) -> torch.Tensor:
        """A tensor with the dtype and device of the flow's parameters."""
        if isinstance(self.transform, torch.nn.Module):
            for param in self.transform.parameters():
                return param
        return self._prototype_tensor

    def get_base_dist(self) -> dist.TorchDistribution:
        """Return ``Normal(0, 1)`` over the flat latent (event shape ``(D,)``)."""
        like = self._like()
        zero, one = like.new_zeros(1), like.new_ones(1)
        return dist.Normal(zero, one).expand([self.latent_dim]).to_event(1)

    def get_transform(self, *args: Any, **kwargs: Any) -> Transform:
        """Return the flow's bijection (built on first use)."""
        if self.transform is None:
            self._build_transform()
        return self.transform

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.TorchDistribution:
        """Return the base normal pushed through the flow."""
        transform = self.get_transform(*args, **kwargs)
        return dist.TransformedDistribution(self.get_base_dist(), transform)


class AutoIAFNormal(AutoNormalizingFlow):
    """A normalizing flow of ``num_transforms`` affine autoregressive transforms.

    Parameters
    ----------
    model : callable
        A Pyro model.
    hidden_dim : list of int or int, optional
        Hidden layer sizes of each transform's autoregressive network; an int
        is one layer. Every layer needs at least ``latent_dim`` units, as
        :class:`pyro.nn.AutoRegressiveNN` requires; a ValueError on the first
        call says so otherwise. Default: one layer of ``3 * latent_dim + 1``.
    init_loc_fn : callable, optional
        Accepted for compatibility only: it has no effect (a FutureWarning says
        so), since the flow has no location parameter to initialize.
    num_transforms : int
        Number of transforms in the chain (>= 1).
    **init_transform_kwargs
        Passed to :func:`pyro.distributions.transforms.affine_autoregressive`.
    """

    def __init__(
        self,
        model: Callable,
        hidden_dim: list[int] | int | None = None,
        init_loc_fn: Callable | None = None,
        num_transforms: int = 1,
        **init_transform_kwargs: Any,
    ):
        if init_loc_fn:
            warnings.warn(
                "AutoIAFNormal ignores init_loc_fn (the flow has no location "
                "parameter to initialize); remove the argument",
                FutureWarning,
                stacklevel=2,
            )
        if (
            isinstance(num_transforms, bool)
            or not isinstance(num_transforms, int)
            or num_transforms < 1
        ):
            raise ValueError(
                f"'num_transforms' must be an int >= 1 such as 2: {num_transforms!r}"
            )
        hidden = _validate_hidden_dim(hidden_dim)
        init_transform_fn = functools.partial(
            iterated,
            num_transforms,
            affine_autoregressive,
            hidden_dims=hidden,
            **init_transform_kwargs,
        )
        super().__init__(model, init_transform_fn=init_transform_fn)
        self.hidden_dim, self._hidden_dim_given = hidden, hidden_dim

    def _build_transform(self) -> None:
        """Build the flow, first checking ``hidden_dim`` against ``latent_dim``.

        Raises
        ------
        ValueError
            A hidden layer has fewer than ``latent_dim`` units.
        """
        dim = self.latent_dim
        if self.hidden_dim is not None and min(self.hidden_dim) < dim:
            raise ValueError(
                f"AutoIAFNormal: hidden_dim={self._hidden_dim_given!r} has a layer "
                f"of {min(self.hidden_dim)} units, but the latent dimension is "
                f"{dim} and every hidden layer of the autoregressive network needs "
                f"at least latent_dim = {dim} units; pass hidden_dim=[{3 * dim + 1}]"
                " (the default, 3 * latent_dim + 1), any list of sizes >= "
                f"{dim}, or leave hidden_dim=None"
            )
        super()._build_transform()


def _validate_hidden_dim(hidden_dim: Any) -> list[int] | None:
    """Return ``hidden_dim`` as a list of layer sizes (``None`` stays ``None``).

    Raises
    ------
    ValueError
        ``hidden_dim`` is not an int >= 1 or a non-empty list of them.
    """
    if hidden_dim is None:
        return None
    sizes = [hidden_dim] if isinstance(hidden_dim, int) else hidden_dim
    if (
        not isinstance(sizes, (list, tuple))
        or not sizes
        or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in sizes)
    ):
        raise ValueError(
            "'hidden_dim' must be a non-empty list of layer sizes (ints >= 1) such"
            f" as [16], an int for one layer, or None for the default: {hidden_dim!r}"
        )
    return list(sizes)


@hookimpl
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register ``auto_normalizing_flow`` and ``auto_iaf_normal``."""
    caps = Capabilities(jit=True)
    register(
        GuideSpec(
            name="auto_normalizing_flow",
            factory=AutoNormalizingFlow,
            family="flows",
            summary="A standard normal pushed through a user-built bijection over "
            "the flat latent.",
            capabilities=caps,
        )
    )
    register(
        GuideSpec(
            name="auto_iaf_normal",
            factory=AutoIAFNormal,
            family="flows",
            summary="A chain of affine autoregressive (IAF) transforms over the flat "
            "latent.",
            capabilities=caps,
        )
    )
