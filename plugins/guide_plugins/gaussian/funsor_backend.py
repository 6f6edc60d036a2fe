"""The ``funsor`` back end: Gaussian tensor variable elimination with funsor.

funsor is an optional extra (``pip install 'guide-core[funsor]'``); it is
imported only when an :class:`AutoGaussianFunsor` is built, and its absence is
reported with the extra to install.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.ops.linalg import ignore_torch_deprecation_warnings
from pyro.poutine.runtime import am_i_wrapped, get_plates

from guide_core.plugin import (
    NotCapturable,
    ProgramCache,
    capturing,
    perturbed,
    record,
    require_extras,
    signature,
)

from .base import AutoGaussian
from .structure import plate_names

__all__ = ["AutoGaussianFunsor", "import_funsor"]

INSTALL_HINT = "guide-core[funsor]"
logger = logging.getLogger(__name__)


def import_funsor() -> Any:
    """Import funsor with its torch backend, or raise ``MissingExtraError``."""
    require_extras("AutoGaussian back end 'funsor'", ["funsor"], INSTALL_HINT)
    import funsor

    funsor.set_backend("torch")
    return funsor


_INTRACTABLE = (
    "the funsor back end cannot eliminate these plates (latents in crossed "
    "plates are coupled); use AutoGaussian(model, backend='dense'), split the "
    "model's latents over an AutoGuideList, or replace a plate by .to_event()"
)


@ignore_torch_deprecation_warnings()
def _eliminate(fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except ValueError as exc:
        if str(exc) != "intractable!":
            raise
        raise NotImplementedError(_INTRACTABLE) from exc
    except NotImplementedError as exc:  # funsor's own "Should not be here!"
        raise NotImplementedError(f"{_INTRACTABLE}\nfunsor said: {exc}") from exc


class AutoGaussianFunsor(AutoGaussian):
    """:class:`AutoGaussian` by Gaussian tensor variable elimination (``"funsor"``).

    Cost is linear in the plate sizes. funsor's symbolic dispatch costs far
    more than the torch operations it issues, so the first draw for given
    shapes records those operations (:func:`guide_core.core.capture.record`,
    checked against funsor on perturbed params) and later draws replay them:
    the same values, gradients and random draws without the dispatch.
    Needs monotone plates (a site's upstreams sit in no plate the site
    lacks). The joint log-density is the factor site
    ``_AutoGaussianFunsor_latent``. ``quantiles`` use a dense factorisation.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        import_funsor()

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        funsor = import_funsor()
        structure = self._structure
        for name, factor in structure.factors.items():
            for u in factor.upstreams:
                broken = structure.broken_plates(name, u)
                if broken:
                    raise NotImplementedError(
                        f"the funsor back end needs monotone plates, but site "
                        f"{name!r} depends on {u!r} outside its plates "
                        f"{plate_names(broken)}; use AutoGaussian(model, "
                        "backend='dense'), split the guide with an AutoGuideList, "
                        "or replace those plates by .to_event()"
                    )
        inputs: dict[str, OrderedDict] = {}
        plate_dims: dict[str, int] = {}
        for name, factor in structure.factors.items():
            domains = OrderedDict()
            for p in sorted(factor.plates, key=lambda p: p.dim):
                plate_dims[p.name] = p.dim
                domains[p.name] = funsor.Bint[p.size]
            for u in factor.upstreams:
                domains[u] = funsor.Reals[structure.latents[u].event_shape]
            inputs[name] = domains
        self._funsor_inputs = inputs
        # Every factor is its own funsor term, as in Pyro. Adding the factors
        # of a plate into one term saves a few torch ops per draw (305 -> 326
        # on the hierarchical benchmark without it) but changes the draws for a
        # seed: with two latents in the plate funsor orders their coordinates
        # otherwise (the same noise goes to other coordinates), and with one
        # it rounds otherwise (float32 differences that Adam amplifies).
        self._funsor_plate_dims = plate_dims
        self._funsor_eliminate = frozenset(plate_dims) | frozenset(structure.latents)
        self._programs = ProgramCache()

    def _funsor_factors(self, funsor: Any, params: Sequence[torch.Tensor]) -> dict:
        """Build the funsor factors from the flat ``params`` list."""
        factors = {}
        pairs = iter(params)
        for name, domains in self._funsor_inputs.items():
            plates = sorted(self._structure.factors[name].plates, key=lambda p: p.dim)
            batch = torch.Size(p.size for p in plates)
            white_vec, prec_sqrt = next(pairs), next(pairs)
            factors[name] = funsor.gaussian.Gaussian(
                white_vec=white_vec.reshape(batch + white_vec.shape[-1:]),
                prec_sqrt=prec_sqrt.reshape(batch + prec_sqrt.shape[-2:]),
                inputs=domains,
            )
        return factors

    def _flat_params(self) -> list[torch.Tensor]:
        out = []
        for name in self._funsor_inputs:
            out.extend(self._factor_params(name))
        return out

    def _dims(self, particles: frozenset) -> dict[str, int]:
        """``{name: dim}`` of the model's plates and the particle plates."""
        dims = dict(self._funsor_plate_dims)
        dims.update({f.name: f.dim for f in particles})
        return dims

    def _rsample_fn(self, particles: frozenset) -> Callable[..., tuple]:
        """``fn(*flat params)`` -> the latents' draws (model order) and log q."""
        funsor = import_funsor()
        dims = self._dims(particles)
        sample_inputs = {f.name: funsor.Bint[f.size] for f in particles}
        latents = list(self._structure.latents)

        def fn(*params: torch.Tensor) -> tuple:
            samples, log_prob = _eliminate(
                funsor.recipes.forward_filter_backward_rsample,
                factors=self._funsor_factors(funsor, params),
                eliminate=self._funsor_eliminate,
                plates=frozenset(dims),
                sample_inputs=sample_inputs,
            )
            values = [funsor.to_data(samples[n], name_to_dim=dims) for n in latents]
            return (*values, funsor.to_data(log_prob, name_to_dim=dims))

        return fn

    def _rsample(self) -> tuple[torch.Tensor, ...]:
        """Draw with funsor; replay funsor's recorded tensor program when the
        shapes were seen before (the same draws, without funsor's dispatch).

        Under an outer capture (the recorded SVI step) or a jit trace, a
        program not recorded yet is not recorded: funsor runs, and the outer
        capture records its calls.
        """
        particles = frozenset(get_plates())
        params = self._flat_params()
        if torch.jit.is_tracing():
            return self._rsample_fn(particles)(*params)
        key = (
            tuple(sorted((f.name, f.size, f.dim) for f in particles)),
            signature((), tuple(params), {}),
        )
        if key not in self._programs and not capturing():
            self._programs[key] = self._record(particles, params)
        program = self._programs.get(key)
        if program is None:  # not recorded, or known not to be replayable
            return self._rsample_fn(particles)(*params)
        with ignore_torch_deprecation_warnings():
            return program(*params)

    def _record(self, particles: frozenset, params: list[torch.Tensor]) -> Any:
        """funsor's program for these shapes, or None (funsor runs each call)."""
        fn = self._rsample_fn(particles)
        try:
            return record(
                fn, params, check_inputs=perturbed(params), differentiable=True
            )
        except NotCapturable as exc:
            logger.info("%s; funsor runs on every call", exc)
            return None

    def _sample_aux_values(self, *, temperature: float) -> dict[str, torch.Tensor]:
        if temperature not in (0, 1):
            raise ValueError(f"temperature must be 0 or 1, got {temperature!r}")
        if temperature == 0:
            return self._mode()
        *values, log_prob = self._rsample()
        if am_i_wrapped() and poutine.get_mask() is not False:
            pyro.factor(self._aux_name, log_prob, has_rsample=True)
        return dict(zip(self._structure.latents, values))

    def _mode(self) -> dict[str, torch.Tensor]:
        funsor = import_funsor()
        particles = frozenset(get_plates())
        dims = self._dims(particles)
        samples, log_prob = _eliminate(
            funsor.recipes.forward_filter_backward_precondition,
            factors=self._funsor_factors(funsor, self._flat_params()),
            eliminate=self._funsor_eliminate,
            plates=frozenset(dims),
        )
        # The mode: every whitened noise coordinate at zero.
        shape = torch.Size(f.size for f in particles)
        noise = torch.zeros(shape + log_prob.inputs["aux"].shape)
        aux = funsor.Tensor(noise)[tuple(f.name for f in particles)]
        with funsor.interpretations.memoize():
            samples = {k: v(aux=aux) for k, v in samples.items()}
        return {k: funsor.to_data(v, name_to_dim=dims) for k, v in samples.items()}
