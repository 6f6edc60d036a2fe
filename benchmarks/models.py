"""The fixed suite of models that the benchmark times every guide on.

Every model is a plain Pyro model that takes its observed data as positional
arguments. The data are synthetic, drawn from a private ``torch.Generator`` with
a fixed seed (nothing is downloaded and the global RNG is left untouched), and
are created in torch's current default dtype and on its default device, so the
suite follows ``torch.set_default_dtype``/``torch.set_default_device``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.distributions as dist
import torch

__all__ = [
    "MODEL_NAMES",
    "ModelCase",
    "build_model",
    "build_suite",
    "grouped_model",
    "hierarchical_model",
    "logistic_model",
    "random_walk_model",
    "tiny_model",
]

DATA_SEED = 20240601

# Problem sizes: (full, quick).
_SIZES: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    "tiny": ({"n": 10}, {"n": 10}),
    "hierarchical": ({"groups": 1000}, {"groups": 20}),
    "logistic": ({"features": 200, "points": 5000}, {"features": 10, "points": 100}),
    "random_walk": ({"length": 500}, {"length": 20}),
    "grouped": ({"groups": 250, "dim": 4}, {"groups": 10, "dim": 4}),
}

MODEL_NAMES: tuple[str, ...] = tuple(_SIZES)


@dataclass(frozen=True)
class ModelCase:
    """One benchmark model together with its data.

    Attributes
    ----------
    name : str
        Suite name, e.g. ``"logistic"``.
    model : callable
        The Pyro model; call it as ``model(*args)``.
    args : tuple
        The observed data, passed positionally to ``model``.
    latents : dict of str to tuple of int
        Each latent site's name and the shape of its value (in trace order).
    sizes : dict of str to int
        The problem sizes the data were generated with.
    description : str
        One line saying what the model is.
    """

    name: str
    model: Callable[..., Any]
    args: tuple[torch.Tensor, ...]
    latents: dict[str, tuple[int, ...]]
    sizes: dict[str, int] = field(default_factory=dict)
    description: str = ""


def tiny_model(x: torch.Tensor, y: torch.Tensor) -> None:
    """Linear regression with three latent sites.

    Parameters
    ----------
    x : torch.Tensor
        Covariates of shape ``(n, 2)``.
    y : torch.Tensor
        Responses of shape ``(n,)``.
    """
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    coef = pyro.sample("coef", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(loc + x @ coef, scale), obs=y)


def hierarchical_model(y: torch.Tensor) -> None:
    """Normal hierarchy: a global loc and scale and one local latent per datum.

    Parameters
    ----------
    y : torch.Tensor
        One observation per group, shape ``(groups,)``.
    """
    loc = pyro.sample("loc", dist.Normal(y.new_zeros(()), 10.0))
    scale = pyro.sample("scale", dist.LogNormal(y.new_zeros(()), 1.0))
    with pyro.plate("groups", y.shape[0]):
        theta = pyro.sample("theta", dist.Normal(loc, scale))
        pyro.sample("y", dist.Normal(theta, 1.0), obs=y)


def logistic_model(x: torch.Tensor, y: torch.Tensor) -> None:
    """Bayesian logistic regression with one vector-valued weight site.

    Parameters
    ----------
    x : torch.Tensor
        Covariates of shape ``(points, features)``.
    y : torch.Tensor
        Binary labels of shape ``(points,)``.
    """
    weights = pyro.sample(
        "weights", dist.Normal(x.new_zeros(x.shape[-1]), 1.0).to_event(1)
    )
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=x @ weights), obs=y)


def random_walk_model(y: torch.Tensor) -> None:
    """Latent Gaussian random walk observed with Normal noise.

    Parameters
    ----------
    y : torch.Tensor
        Noisy observations of the walk, shape ``(length,)``.
    """
    increments = pyro.sample(
        "increments", dist.Normal(y.new_zeros(y.shape[0]), 1.0).to_event(1)
    )
    path = increments.cumsum(-1)
    with pyro.plate("time", y.shape[0]):
        pyro.sample("obs", dist.Normal(path, 0.5), obs=y)


def grouped_model(y: torch.Tensor, prior_tril: torch.Tensor) -> None:
    """A plate of groups, each with a correlated local vector and no globals.

    Every latent site shares the leading plate, so the per-plate batched
    Gaussians (``AutoBatchedMultivariateNormal``) apply; the hierarchical
    model's globals sit outside its plate, so they do not apply there.

    Parameters
    ----------
    y : torch.Tensor
        One noisy observation of each group's vector, shape ``(groups, dim)``.
    prior_tril : torch.Tensor
        Cholesky factor of the locals' prior covariance, shape ``(dim, dim)``.
    """
    with pyro.plate("groups", y.shape[0]):
        theta = pyro.sample(
            "theta",
            dist.MultivariateNormal(y.new_zeros(y.shape[-1]), scale_tril=prior_tril),
        )
        pyro.sample("y", dist.Normal(theta, 1.0).to_event(1), obs=y)


def _to_default(t: torch.Tensor) -> torch.Tensor:
    """Move a CPU float64 tensor to torch's default dtype and device."""
    return t.to(dtype=torch.get_default_dtype(), device=torch.get_default_device())


def _generator() -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(DATA_SEED)


def _normal(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64, device="cpu")


def build_model(name: str, quick: bool = False) -> ModelCase:
    """Build one model of the suite with its synthetic data.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES`.
    quick : bool
        Use the small smoke-test sizes instead of the benchmark sizes.

    Returns
    -------
    ModelCase
        The model, its data and its expected latent sites.
    """
    if name not in _SIZES:
        raise ValueError(
            f"unknown benchmark model {name!r}; choose from {', '.join(MODEL_NAMES)}"
        )
    sizes = _SIZES[name][1 if quick else 0]
    gen = _generator()
    if name == "tiny":
        n = sizes["n"]
        x = _normal(gen, n, 2)
        y = 0.5 + x @ torch.tensor([1.0, -2.0], dtype=torch.float64)
        y = y + 0.3 * _normal(gen, n)
        return ModelCase(
            name,
            tiny_model,
            (_to_default(x), _to_default(y)),
            {"scale": (), "loc": (), "coef": (2,)},
            sizes,
            "3 latent sites (LogNormal scale, Normal loc, 2-vector coef)",
        )
    if name == "hierarchical":
        g = sizes["groups"]
        theta = 1.0 + 2.0 * _normal(gen, g)
        y = theta + _normal(gen, g)
        return ModelCase(
            name,
            hierarchical_model,
            (_to_default(y),),
            {"loc": (), "scale": (), "theta": (g,)},
            sizes,
            f"global loc/scale + {g} local Normal latents in a plate",
        )
    if name == "logistic":
        d, n = sizes["features"], sizes["points"]
        x = _normal(gen, n, d)
        true_w = _normal(gen, d) / d**0.5
        probs = torch.sigmoid(x @ true_w)
        y = torch.bernoulli(probs, generator=gen)
        return ModelCase(
            name,
            logistic_model,
            (_to_default(x), _to_default(y)),
            {"weights": (d,)},
            sizes,
            f"logistic regression, {d} weights, {n} points",
        )
    if name == "grouped":
        g, d = sizes["groups"], sizes["dim"]
        cov = 2.0 * (0.5 * torch.eye(d, dtype=torch.float64) + 0.5)  # correlation 0.5
        tril = torch.linalg.cholesky(cov)
        theta = _normal(gen, g, d) @ tril.T
        y = theta + _normal(gen, g, d)
        return ModelCase(
            name,
            grouped_model,
            (_to_default(y), _to_default(tril)),
            {"theta": (g, d)},
            sizes,
            f"{g} groups in a plate, each a correlated {d}-vector (no globals)",
        )
    t = sizes["length"]
    path = (0.1 * _normal(gen, t)).cumsum(-1)
    y = path + 0.5 * _normal(gen, t)
    return ModelCase(
        name,
        random_walk_model,
        (_to_default(y),),
        {"increments": (t,)},
        sizes,
        f"latent Gaussian random walk of length {t}",
    )


def build_suite(
    names: list[str] | tuple[str, ...] | None = None, quick: bool = False
) -> list[ModelCase]:
    """Build several models of the suite (all of them by default), in suite order.

    Parameters
    ----------
    names : sequence of str or None
        Models to build; ``None`` builds every model in :data:`MODEL_NAMES`.
    quick : bool
        Use the small smoke-test sizes.

    Returns
    -------
    list of ModelCase
    """
    wanted = list(MODEL_NAMES) if names is None else list(names)
    unknown = [n for n in wanted if n not in _SIZES]
    if unknown:
        raise ValueError(
            f"unknown benchmark model(s) {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(MODEL_NAMES)}"
        )
    return [build_model(n, quick=quick) for n in MODEL_NAMES if n in wanted]
