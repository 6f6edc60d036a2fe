"""The bench models written in NumPyro, and NumPyro's jitted SVI step timed.

Imported only where NumPyro is installed (the ``bench`` extra), in a probe
process (:mod:`benchmarks.child`) whose XLA threads were set before JAX
started. The models mirror :mod:`benchmarks.models` site by site (same names,
shapes and distributions) and take the very same data, converted from the
torch tensors of :func:`benchmarks.models.build_model`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["GUIDES", "has_guide", "numpyro_model", "time_numpyro"]

# NumPyro guides timed, by class name: those whose constructor needs only the
# model (the container and semi-local guides are left out).
GUIDES = (
    "AutoNormal",
    "AutoDelta",
    "AutoDiagonalNormal",
    "AutoMultivariateNormal",
    "AutoLowRankMultivariateNormal",
    "AutoLaplaceApproximation",
    "AutoIAFNormal",
    "AutoBNAFNormal",
    "AutoBatchedMultivariateNormal",
    "AutoBatchedLowRankMultivariateNormal",
    "AutoDAIS",
)


def has_guide(class_name: str) -> bool:
    """Whether NumPyro's bench column covers this guide class."""
    return class_name in GUIDES


def _models() -> dict[str, Callable[..., None]]:
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def tiny(x, y):
        scale = numpyro.sample("scale", dist.LogNormal(0.0, 1.0))
        loc = numpyro.sample("loc", dist.Normal(0.0, 1.0))
        coef = numpyro.sample("coef", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Normal(loc + x @ coef, scale), obs=y)

    def hierarchical(y):
        loc = numpyro.sample("loc", dist.Normal(0.0, 10.0))
        scale = numpyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with numpyro.plate("groups", y.shape[0]):
            theta = numpyro.sample("theta", dist.Normal(loc, scale))
            numpyro.sample("y", dist.Normal(theta, 1.0), obs=y)

    def logistic(x, y):
        weights = numpyro.sample(
            "weights", dist.Normal(jnp.zeros(x.shape[-1]), 1.0).to_event(1)
        )
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=x @ weights), obs=y)

    def random_walk(y):
        increments = numpyro.sample(
            "increments", dist.Normal(jnp.zeros(y.shape[0]), 1.0).to_event(1)
        )
        with numpyro.plate("time", y.shape[0]):
            numpyro.sample("obs", dist.Normal(increments.cumsum(-1), 0.5), obs=y)

    def grouped(y, prior_tril):
        with numpyro.plate("groups", y.shape[0]):
            theta = numpyro.sample(
                "theta",
                dist.MultivariateNormal(jnp.zeros(y.shape[-1]), scale_tril=prior_tril),
            )
            numpyro.sample("y", dist.Normal(theta, 1.0).to_event(1), obs=y)

    return {
        "tiny": tiny,
        "hierarchical": hierarchical,
        "logistic": logistic,
        "random_walk": random_walk,
        "grouped": grouped,
    }


def numpyro_model(name: str, torch_args: tuple) -> tuple[Callable[..., None], tuple]:
    """The NumPyro model of bench model ``name`` and its data as JAX arrays."""
    import jax.numpy as jnp

    models = _models()
    if name not in models:
        raise ValueError(f"no NumPyro version of bench model {name!r}")
    args = tuple(jnp.asarray(a.detach().cpu().numpy()) for a in torch_args)
    return models[name], args


def time_numpyro(
    class_name: str,
    name: str,
    torch_args: tuple,
    *,
    seed: int,
    lr: float,
    warmup: int,
    steps: int,
    meter: Any,
) -> dict[str, Any]:
    """Time NumPyro's ``jax.jit(svi.update)`` step, after ``warmup`` steps.

    ``meter`` (a :class:`benchmarks.memory.PeakMeter`) takes its baseline
    after the model and data are built and its peak over the timed steps.
    """
    import jax
    import numpyro.infer.autoguide as autoguide
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.optim import Adam

    model, args = numpyro_model(name, torch_args)
    meter.baseline()
    guide = getattr(autoguide, class_name)(model)
    svi = SVI(model, guide, Adam(lr), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(seed), *args)
    update = jax.jit(svi.update)
    losses: list[float] = []
    start = time.perf_counter()
    for _ in range(max(1, warmup)):  # the first call compiles
        state, loss = update(state, *args)
        losses.append(float(loss.block_until_ready()))
    warm_s = time.perf_counter() - start
    meter.start()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, loss = update(state, *args)
        loss.block_until_ready()
        times.append(1e3 * (time.perf_counter() - start))
        losses.append(float(loss))
    meter.stop()
    return {
        "ms": statistics.median(times),
        "steps_ms": times,
        "warmup_s": warm_s,
        "final_loss": statistics.fmean(losses[-10:]),
        **meter.as_dict(),
    }
