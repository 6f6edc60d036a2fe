"""The subject of a contract run: one registered guide (and back end), and
what the checks do with it: build it on a model case, fit it, read its sites.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.poutine.util import site_is_subsample

import guide_core
from guide_core import GuideSpec, registry

from .models import ModelCase

__all__ = ["CLEAR_ERRORS", "Subject", "assert_clear_error", "finite"]
__all__ += ["latent_sites", "observed_sites", "params_of"]

#: The exception types a guide may refuse a model with: never a bare
#: ``RuntimeError`` or ``IndexError`` from deep inside torch.
CLEAR_ERRORS = (ValueError, TypeError, NotImplementedError)

KwargsHook = Callable[[str, ModelCase], Mapping[str, Any]]


def _sample_sites(case: ModelCase, args: tuple) -> dict[str, dict]:
    # one run under a fixed seed that leaves the global RNG alone
    with poutine.block(), poutine.seed(rng_seed=0):
        trace = poutine.trace(case.model).get_trace(*args)
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    }


def latent_sites(case: ModelCase, args: tuple) -> dict[str, dict]:
    """The latent sample sites of ``case.model(*args)``, by name, as trace nodes."""
    sites = _sample_sites(case, args)
    return {n: s for n, s in sites.items() if not s["is_observed"]}


def observed_sites(case: ModelCase, args: tuple) -> set[str]:
    """The names of the observed sample sites of ``case.model(*args)``."""
    return {n for n, s in _sample_sites(case, args).items() if s["is_observed"]}


def assert_clear_error(
    excinfo: pytest.ExceptionInfo, *names: str, who: str = ""
) -> None:
    """Assert a refusal is one of :data:`CLEAR_ERRORS` and that its message
    quotes one of ``names`` (a site name, or the guide's class name)."""
    error = excinfo.value
    assert isinstance(error, CLEAR_ERRORS), (
        f"{who}: refused with {type(error).__name__}, not a ValueError, TypeError "
        f"or NotImplementedError: {error}"
    )
    text = str(error)
    quoted = [n for n in names if re.search(rf"\b{re.escape(n)}\b", text)]
    assert quoted, f"{who}: the error names none of {names}: {text}"


@attrs.frozen
class Subject:
    """One guide under contract: a registry name and, for guides with back
    ends, one back end.

    Attributes
    ----------
    name : str
        The registry name.
    backend : str or None
        The back end passed as ``backend=`` to :func:`guide_core.registry.make`.
    spec : GuideSpec
        What the registry says about it.
    kwargs : callable
        ``kwargs(name, case) -> dict``: extra constructor arguments per model.
    """

    name: str
    backend: str | None
    spec: GuideSpec
    kwargs: KwargsHook = attrs.field(default=lambda name, case: {})

    @property
    def label(self) -> str:
        """``name`` or ``name[backend]``, for messages."""
        return self.name + (f"[{self.backend}]" if self.backend else "")

    def claims(self, capability: str) -> bool:
        """Whether the spec claims ``capability`` (a :class:`Capabilities` field)."""
        return bool(getattr(self.spec.capabilities, capability))

    def require(self, capability: str) -> None:
        """Skip the calling test unless the guide claims ``capability``."""
        if not self.claims(capability):
            pytest.skip(f"{self.label} does not claim {capability!r}")

    def make(self, case: ModelCase, **extra: Any) -> Any:
        """Build the guide for ``case.model`` through the registry."""
        kwargs = dict(self.kwargs(self.name, case))
        if self.backend is not None:
            kwargs["backend"] = self.backend
        kwargs.update(extra)
        return registry.make(self.name, case.model, **kwargs)

    def elbo(self, case: ModelCase, cls: type | None = None) -> Any:
        """The ELBO a guide is trained with on ``case`` (enumerating discrete
        sites where the model has them)."""
        if cls is None:
            cls = TraceEnum_ELBO if case.discrete else Trace_ELBO
        if cls.__name__.endswith("TraceEnum_ELBO"):
            return cls(max_plate_nesting=1)
        return cls()

    def fit(
        self, guide: Any, case: ModelCase, args: tuple, steps: int, loss: Any = None
    ) -> list[float]:
        """Fit ``guide`` in place; return the losses.

        A guide with its own procedure runs it through :func:`guide_core.fit`;
        the others take ``steps`` of ``ClippedAdam`` whose rate decays from
        0.15 to 0.0015, so the last iterates settle near the optimum.
        """
        if self.spec.procedure is not None:
            result = guide_core.fit(
                case.model, guide, *args, progress=False, khat=False, seed=0
            )
            return [float(x) for x in result.losses]
        decay = 0.01 ** (1.0 / max(steps, 1))
        optim = pyro.optim.ClippedAdam({"lr": 0.15, "lrd": decay})
        loss = self.elbo(case) if loss is None else loss
        svi = pyro.infer.SVI(case.model, guide, optim, loss)
        return [svi.step(*args) for _ in range(steps)]

    def case_for_continuous(self, continuous: ModelCase, discrete: ModelCase):
        """``continuous`` if the guide claims continuous sites, else ``discrete``."""
        return continuous if self.claims("continuous") else discrete


def finite(losses: list[float]) -> bool:
    """Whether every loss is a finite number."""
    return all(math.isfinite(x) for x in losses)


def params_of(guide: Any) -> dict[str, torch.Tensor]:
    """The guide's parameters (module parameters and, for guides that keep
    them there, the param store), detached copies by name."""
    out = {n: p.detach().clone() for n, p in guide.named_parameters()}
    for n, p in pyro.get_param_store().items():
        out.setdefault(n, p.detach().clone())
    return out
