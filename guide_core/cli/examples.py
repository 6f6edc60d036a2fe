"""Built-in example models, used by the command line when no model is given."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch

__all__ = ["EXAMPLES", "eight_schools"]


def eight_schools(J: int, sigma: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """The eight-schools hierarchical model (Rubin 1981), centered form.

    Each school's treatment effect ``theta`` is drawn around a population mean
    ``mu`` with spread ``tau``; ``y`` are the observed effects with known
    standard errors ``sigma``. Its funnel-shaped posterior separates guides that
    capture the dependence between ``tau`` and ``theta`` from those that don't.
    """
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", J):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def _eight_schools_data() -> dict[str, Any]:
    return {
        "J": 8,
        "sigma": torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]),
        "y": torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]),
    }


# name -> (model, a function returning its keyword data)
EXAMPLES: dict[str, tuple[Callable[..., Any], Callable[[], dict[str, Any]]]] = {
    "eight_schools": (eight_schools, _eight_schools_data),
}
