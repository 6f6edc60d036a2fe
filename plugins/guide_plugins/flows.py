"""The ``flows`` family: normalizing-flow posteriors over the flat latent.

:class:`AutoNormalizingFlow` pushes a standard normal over the flat
unconstrained latent of :class:`~guide_plugins.continuous.AutoContinuous`
through a learnable bijection; :class:`AutoIAFNormal` is the case whose
bijection is a chain of affine autoregressive (IAF) transforms, and
:class:`AutoBNAFNormal` the one whose bijection is a block neural
autoregressive flow.

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
from collections.abc import Callable, Sequence
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import (
    BlockAutoregressive,
    ComposeTransformModule,
    affine_autoregressive,
    iterated,
)
from torch.distributions import Transform

from guide_core import Capabilities, GuideSpec, hookimpl, init_to_feasible
from guide_plugins.continuous import AutoContinuous

__all__ = ["AutoBNAFNormal", "AutoIAFNormal", "AutoNormalizingFlow", "register_guides"]


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
        self._init_flow(model, init_transform_fn, init_to_feasible)

    def _init_flow(
        self,
        model: Callable,
        init_transform_fn: Callable[[int], Transform],
        init_loc_fn: Callable,
    ) -> None:
        """The constructor's work, with the prototype's ``init_loc_fn`` chosen."""
        if not callable(init_transform_fn):
            raise TypeError(
                "'init_transform_fn' must be callable as init_transform_fn(latent_dim)"
                " and return a Transform, e.g. functools.partial(iterated, 2, "
                f"block_autoregressive): {init_transform_fn!r}"
            )
        AutoContinuous.__init__(self, model, init_loc_fn=init_loc_fn)
        self._init_transform_fn = init_transform_fn
        self.transform = None
        self._prototype_tensor = torch.tensor(0.0)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        like = self._init_loc()  # the model's dtype and device, which the flow takes
        self._prototype_tensor = like.new_zeros(())
        if self.transform is None:  # now, so a state loaded before a call applies
            self._build_transform()
            if isinstance(self.transform, torch.nn.Module):
                self.transform.to(dtype=like.dtype, device=like.device)

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


class _Reverse(Transform):
    """Reverse the order of a vector's coordinates (volume preserving)."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reverse)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.flip(-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[:-1])


def _bnaf(
    num_flows: int, hidden_factors: list[int], latent_dim: int
) -> ComposeTransformModule:
    """``num_flows`` block autoregressive transforms, the order reversed between."""
    parts: list[Transform] = []
    for i in range(num_flows):
        if i:
            # cached, so that inverting a draw hands the transform below the
            # very tensor it produced (BlockAutoregressive inverts from cache)
            parts.append(_Reverse(cache_size=1))
        parts.append(BlockAutoregressive(latent_dim, hidden_factors=hidden_factors))
    return ComposeTransformModule(parts)


class AutoBNAFNormal(AutoNormalizingFlow):
    """A block neural autoregressive flow (BNAF) over the flat latent.

    A standard normal pushed through ``num_flows``
    :class:`~pyro.distributions.transforms.BlockAutoregressive` transforms
    (``tanh`` activations), reversing the coordinates between two of them so
    that each coordinate can depend on every other one. The parameters live
    under ``AutoBNAFNormal.transform.<i>...``. Medians and quantiles are
    sampled (see the module docstring). The flow's inverse has no closed form,
    so the posterior's ``log_prob`` is only available for its own draws.

    Parameters
    ----------
    model : callable
        A Pyro model.
    num_flows : int
        Number of block autoregressive transforms (>= 1).
    hidden_factors : sequence of int
        Each hidden layer of a transform has ``factor * latent_dim`` units;
        one factor (>= 1) per layer.
    init_loc_fn : callable
        The initialization strategy of the prototype run (the flow itself has
        no location parameter).
    """

    def __init__(
        self,
        model: Callable,
        *,
        num_flows: int = 1,
        hidden_factors: Sequence[int] = (8, 8),
        init_loc_fn: Callable = init_to_feasible,
    ):
        if (
            isinstance(num_flows, bool)
            or not isinstance(num_flows, int)
            or num_flows < 1
        ):
            raise ValueError(
                f"'num_flows' must be an int >= 1 such as 2: {num_flows!r}"
            )
        factors = _validate_hidden_dim(hidden_factors, "hidden_factors", scalar=False)
        if factors is None:
            raise ValueError("'hidden_factors' must be a list of ints >= 1: None")
        self.num_flows, self.hidden_factors = num_flows, factors
        fn = functools.partial(_bnaf, num_flows, factors)
        self._init_flow(model, fn, init_loc_fn)


def _validate_hidden_dim(
    hidden_dim: Any, what: str = "hidden_dim", *, scalar: bool = True
) -> list[int] | None:
    """Return ``hidden_dim`` as a list of layer sizes (``None`` stays ``None``).

    ``what`` names the argument in the error; ``scalar`` allows one int.

    Raises
    ------
    ValueError
        ``hidden_dim`` is not an int >= 1 (if ``scalar``) or a non-empty list
        of them.
    """
    if hidden_dim is None:
        return None
    sizes = [hidden_dim] if scalar and isinstance(hidden_dim, int) else hidden_dim
    if (
        not isinstance(sizes, (list, tuple))
        or not sizes
        or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in sizes)
    ):
        one = ", an int for one layer," if scalar else ""
        raise ValueError(
            f"'{what}' must be a non-empty list of layer sizes (ints >= 1) such"
            f" as [16]{one} or None for the default: {hidden_dim!r}"
        )
    return list(sizes)


@hookimpl
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register ``auto_normalizing_flow``, ``auto_iaf_normal``, ``auto_bnaf_normal``."""
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
            name="auto_bnaf_normal",
            factory=AutoBNAFNormal,
            family="flows",
            summary="A block neural autoregressive flow (BNAF) over the flat latent.",
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
