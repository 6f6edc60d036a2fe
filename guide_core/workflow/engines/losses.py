"""The ELBO losses a recorded step can capture, written without value reads.

Pyro's ELBOs turn each log-density into a Python float on the way
(``loss_and_grads`` reports a float), which a capture of the tensor program
cannot follow. The functions here compute the same differentiable loss from
the same traces (the ELBO's own, read through :mod:`.private_pyro`:
particles, vectorization and plate nesting as Pyro sets them up), but stay
in tensors. Only what has the
same value and gradient as Pyro's estimator is offered: reparameterized
guides for ``Trace_ELBO``/``TraceGraph_ELBO`` (whose surrogate terms vanish
then), ``TraceMeanField_ELBO``'s analytic KL where one is registered, and
``TraceEnum_ELBO`` with discrete sites enumerated in the model only.
Anything else raises :class:`NotRecordable` with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.ops import packed
from pyro.ops.contract import contract_tensor_tree
from pyro.ops.rings import LogRing
from torch.distributions import kl_divergence

from .private_pyro import model_factors, trace_builder

__all__ = ["LossFn", "NotRecordable", "recordable_loss"]

LossFn = Callable[[Callable, Callable, tuple, dict], torch.Tensor]


class NotRecordable(RuntimeError):
    """A step cannot be recorded; the message says why (the fit runs eager)."""


def _sample_sites(trace: Any) -> list[tuple[str, dict]]:
    return [(n, s) for n, s in trace.nodes.items() if s["type"] == "sample"]


def _guide_entropy(name: str, site: dict) -> torch.Tensor:
    _, score_function, entropy = site["score_parts"]
    if not is_identically_zero(score_function):
        raise NotRecordable(
            f"guide site {name!r} is not reparameterized ({type(site['fn']).__name__}"
            "); its score-function gradient is left to Pyro's ELBO"
        )
    return entropy.sum() if torch.is_tensor(entropy) else torch.as_tensor(entropy)


def _reparam_particle(model_trace: Any, guide_trace: Any) -> torch.Tensor:
    elbo = 0.0
    for _, site in _sample_sites(model_trace):
        elbo = elbo + site["log_prob_sum"]
    for name, site in _sample_sites(guide_trace):
        elbo = elbo - _guide_entropy(name, site)
    return -elbo


def _mean_field_particle(model_trace: Any, guide_trace: Any) -> torch.Tensor:
    elbo = 0.0
    for name, site in _sample_sites(model_trace):
        if site["is_observed"]:
            elbo = elbo + site["log_prob_sum"]
            continue
        q = guide_trace.nodes[name]
        try:
            kl = kl_divergence(q["fn"], site["fn"])
        except NotImplementedError:
            elbo = elbo + site["log_prob_sum"] - _guide_entropy(name, q)
            continue
        kl = scale_and_mask(kl, scale=q["scale"], mask=q["mask"])
        if torch.is_tensor(kl):
            elbo = elbo - kl.sum()
        else:
            elbo = elbo - kl * torch.Size(q["fn"].batch_shape).numel()
    for name, site in _sample_sites(guide_trace):
        if name not in model_trace.nodes:  # an auxiliary site of the guide
            elbo = elbo - _guide_entropy(name, site)
    return -elbo


def _check_enum_guide(guide_trace: Any) -> None:
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["infer"].get("enumerate"):
            raise NotRecordable(
                f"guide site {name!r} is enumerated; TraceEnum_ELBO's DiCE "
                "weights for it are left to Pyro"
            )
        if not is_identically_zero(site["packed"]["score_parts"].score_function):
            raise NotRecordable(
                f"guide site {name!r} is not reparameterized; its score-function "
                "gradient is left to Pyro's TraceEnum_ELBO"
            )


def _check_enum_model(model_trace: Any) -> None:
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample" and site["infer"].get("num_samples") is not None:
            raise NotRecordable(
                f"model site {name!r} is sampled num_samples times; its weights "
                "are left to Pyro's TraceEnum_ELBO"
            )


def enum_particle(model_trace: Any, guide_trace: Any) -> torch.Tensor:
    """The loss of one (packed) particle of ``TraceEnum_ELBO``, in tensors.

    Pyro's ``TraceEnum_ELBO`` runs every expectation through DiCE, which asks
    ``(prob > 0).all()`` of each cost, a read the recorder cannot follow.
    When every guide site is reparameterized and none is enumerated, the
    DiCE weights are all one, and the loss is the model's log density with
    its enumerated sites summed out (Pyro's own model factors, contracted in
    the log semiring as Pyro contracts them) minus the guide's log density.

    Raises
    ------
    NotRecordable
        When the DiCE weights are not all one (see the module docstring).
    """
    _check_enum_guide(guide_trace)
    _check_enum_model(model_trace)
    compute = model_factors()
    if compute is None:
        raise NotRecordable(
            "TraceEnum_ELBO's model factors cannot be read in this Pyro; its "
            "loss is left to Pyro"
        )
    costs, log_factors, _, sum_dims, scale = compute(model_trace, guide_trace)
    elbo: Any = 0.0
    for terms in costs.values():
        for term in terms:
            elbo = elbo + term.sum()
    if log_factors:
        sizes: dict[str, int] = {}
        for terms in log_factors.values():
            for term in terms:
                sizes.update(zip(term._pyro_dims, term.shape))
        ring = LogRing(dim_to_size=sizes)
        for terms in contract_tensor_tree(log_factors, sum_dims, ring=ring).values():
            for term in terms:
                elbo = elbo + packed.scale_and_mask(term, scale=scale).sum()
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            elbo = elbo - site["packed"]["log_prob"].sum()
    return -elbo


_PARTICLE_LOSSES = {
    Trace_ELBO: _reparam_particle,
    TraceGraph_ELBO: _reparam_particle,
    TraceMeanField_ELBO: _mean_field_particle,
    TraceEnum_ELBO: enum_particle,
}


def recordable_loss(elbo: Any) -> LossFn:
    """Return ``loss(model, guide, args, kwargs)`` computing ``elbo``'s loss.

    Parameters
    ----------
    elbo : pyro.infer.ELBO
        ``Trace_ELBO``, ``TraceGraph_ELBO`` or ``TraceMeanField_ELBO`` (exactly
        these classes; subclasses such as the ``Jit*`` ones change how the
        loss is run, so they are left to Pyro).

    Returns
    -------
    callable
        The differentiable loss, a scalar tensor, averaged over
        ``elbo.num_particles``.

    Raises
    ------
    NotRecordable
        For any other ELBO; when called, for a guide site that is not
        reparameterized.
    """
    particle = _PARTICLE_LOSSES.get(type(elbo))
    if particle is None:
        known = ", ".join(k.__name__ for k in _PARTICLE_LOSSES)
        raise NotRecordable(
            f"{type(elbo).__name__} is not recorded (the recorded engine knows {known})"
        )

    traces = trace_builder(elbo)
    if traces is None:
        raise NotRecordable(
            f"{type(elbo).__name__}'s traces cannot be read in this Pyro; its "
            "loss is left to Pyro"
        )

    def loss(model: Callable, guide: Callable, args: tuple, kwargs: dict):
        total = 0.0
        for model_trace, guide_trace in traces(model, guide, args, kwargs):
            total = total + particle(model_trace, guide_trace)
        # one vectorized trace sums over the particles, as the loop does
        return total / elbo.num_particles

    return loss
