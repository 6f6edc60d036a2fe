"""Shared by the tests: small guides built on the core protocols, and target
models with no Gaussian posterior (a banana, a funnel) with an ELBO estimator
to compare guides on them."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import SVI, Trace_ELBO
from pyro.nn.module import PyroParam
from torch.distributions import biject_to

import guide_core
from guide_core import AutoGuide, init_to_median


class AutoToy(AutoGuide):
    """A tiny guide for registry tests: a point mass at the init value."""

    def __init__(self, model, *, init_loc_fn=guide_core.init_to_median, scale=1.0):
        self.init_loc_fn = init_loc_fn
        super().__init__(self._wrap_init(model, init_loc_fn))
        self.scale = scale

    def forward(self, *args, **kwargs):
        self._ensure_setup(*args, **kwargs)
        return {
            n: pyro.sample(n, dist.Delta(s.value, event_dim=s.event_dim))
            for n, s in self._sites().items()
        }

    def _median(self, *args, **kwargs):
        return {n: s.value for n, s in self._sites().items()}


class AutoPoint(AutoGuide):
    """A test guide: a learnable point per site in the unconstrained space,
    with a fixed unit-scale Normal marginal for median/quantiles."""

    def __init__(self, model, *, init_loc_fn=init_to_median, create_plates=None):
        self.init_loc_fn = init_loc_fn
        super().__init__(
            self._wrap_init(model, init_loc_fn), create_plates=create_plates
        )

    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        for name, site in self._sites().items():
            u = site.init_unconstrained()
            setattr(
                self, name, PyroParam(u, constraints.real, site.unconstrained_event_dim)
            )

    def forward(self, *args, **kwargs):
        self._ensure_setup(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        assert set(self._prototype.plates) <= set(plates)
        out = {}
        for name, site in self._sites().items():
            with self._site_plates(site):
                u = getattr(self, name)
                value = site.transform(u)
                out[name] = pyro.sample(
                    name, dist.Delta(value, event_dim=site.event_dim)
                )
        return out

    def _unconstrained_marginals(self, *args, **kwargs):
        return {n: dist.Normal(getattr(self, n), 1.0) for n in self._sites()}


class PointMessenger(guide_core.AutoMessenger):
    """A test messenger: a Normal with a learnable loc per site (unit scale in the
    unconstrained space), created lazily with the core's plate shaping."""

    def get_posterior(self, name, prior):
        transform = biject_to(prior.support)
        event_dim = transform.codomain.event_dim
        if not hasattr(self, f"{name}_loc"):
            with torch.no_grad():
                init = transform.inv(prior.sample())
                init = self._adjust_plates(torch.zeros_like(init), event_dim)
            setattr(self, f"{name}_loc", PyroParam(init, event_dim=event_dim))
        loc = getattr(self, f"{name}_loc")
        base = dist.Normal(loc, 1.0).to_event(transform.domain.event_dim)
        return dist.TransformedDistribution(base, transform.with_cache())


# -- targets without a Gaussian posterior ------------------------------------------


def banana():
    """A 2-D banana: y bends with x**2, so no Gaussian fits it (log p(data) = 0)."""
    x = pyro.sample("x", dist.Normal(0.0, 2.0))
    pyro.sample("y", dist.Normal(0.25 * x**2, 0.5))


FUNNEL_SCALE = 1.5


def funnel():
    """Neal's funnel in 3-D, ``x | v ~ N(0, exp(v / 2))`` with no data (log p = 0),
    milder than Neal's ``v ~ N(0, 3)``: ``v ~ N(0, 1.5)``, where a guide trains in
    a few hundred steps and uncorrected Langevin steps (AutoDAIS) do not diverge
    in the neck."""
    v = pyro.sample("v", dist.Normal(0.0, FUNNEL_SCALE))
    scale = (v / 2).exp().unsqueeze(-1).expand(v.shape + (2,))
    pyro.sample("x", dist.Normal(0.0, scale).to_event(1))


def fit(model, guide, steps, *, lr=0.01, lrd=None, particles=8, vectorize=True, seed=0):
    """``steps`` SVI steps of Adam from ``seed``: the same for every guide compared.

    With ``lrd``, ClippedAdam whose learning rate decays by ``lrd`` over the run.
    """
    pyro.set_rng_seed(seed)
    if lrd is None:
        optim = pyro.optim.Adam({"lr": lr})
    else:
        optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": lrd ** (1 / steps)})
    loss = Trace_ELBO(
        num_particles=particles, vectorize_particles=vectorize, max_plate_nesting=0
    )
    svi = SVI(model, guide, optim, loss)
    for _ in range(steps):
        svi.step()


def elbo(model, guide, num_samples, *, vectorize=True, seed=123):
    """The ELBO of ``guide`` on ``model`` (no plates, no arguments) from
    ``num_samples`` draws, and its Monte Carlo standard error.

    ``vectorize=False`` draws one at a time, for guides that refuse a particle
    plate (AutoDAIS runs one trajectory per call).
    """
    pyro.set_rng_seed(seed)
    if vectorize:
        with torch.no_grad(), pyro.plate("_particles", num_samples, dim=-1):
            guide_trace = poutine.trace(guide).get_trace()
            replayed = poutine.replay(model, trace=guide_trace)
            model_trace = poutine.trace(replayed).get_trace()
        log_w = _log_density(model_trace) - _log_density(guide_trace)
    else:
        draws = [-Trace_ELBO().loss(model, guide) for _ in range(num_samples)]
        log_w = torch.tensor(draws)
    return log_w.mean().item(), log_w.std().item() / math.sqrt(num_samples)


def fitted_elbos(model, factories, steps, num_samples, *, vectorize=True, **fit_kwargs):
    """``{name: (ELBO, its MC error)}`` of each ``factories[name](model)``,
    trained with :func:`fit` for ``steps`` from the same seed (a clean param
    store each)."""
    results = {}
    for name, factory in factories.items():
        pyro.clear_param_store()
        guide = factory(model)
        fit(model, guide, steps, vectorize=vectorize, **fit_kwargs)
        results[name] = elbo(model, guide, num_samples, vectorize=vectorize)
    return results


def _log_density(trace):
    """Per particle, the sum of every sample site's log density."""
    trace.compute_log_prob()
    sites = [s for s in trace.nodes.values() if s["type"] == "sample"]
    return sum(s["log_prob"] for s in sites)


def assert_reloads_the_summaries(guide, path, model, make_untrained, site):
    """Save ``guide``, load it back and assert the same sampled summaries.

    ``guide.num_summary_samples`` is set, and its median and 10%/90%
    quantiles are seeded; an untrained ``make_untrained()`` must give another
    median of ``site`` (so equality means the training was loaded). Returns
    the loaded guide, for its attributes.
    """
    samples = guide.num_summary_samples
    median, quantiles = guide.median(), guide.quantiles([0.1, 0.9])
    guide_core.save(guide, path)
    pyro.clear_param_store()
    untrained = make_untrained()
    untrained.num_summary_samples = samples
    assert not torch.allclose(untrained.median()[site], median[site])
    pyro.clear_param_store()
    loaded = guide_core.load(path, model)
    loaded.num_summary_samples = samples
    for k, v in loaded.median().items():
        assert torch.equal(v, median[k]), k
    for k, v in loaded.quantiles([0.1, 0.9]).items():
        assert torch.equal(v, quantiles[k]), k
    return loaded


#: Data of :func:`conjugate_normal`.
CONJUGATE_Y = torch.tensor([2.1, 1.7, 2.5, 1.9, 2.3, 2.8, 1.6, 2.0])


def conjugate_normal(y):
    """``mu ~ N(0, 1)``, ``y_i ~ N(mu, 1)``: the posterior of ``mu`` is
    ``N(sum(y) / (n + 1), 1 / (n + 1))`` (see :func:`conjugate_posterior`)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def conjugate_posterior(y) -> tuple[float, float]:
    """The exact posterior mean and sd of ``mu`` in :func:`conjugate_normal`."""
    n = len(y)
    return float(y.sum()) / (n + 1), (n + 1) ** -0.5
