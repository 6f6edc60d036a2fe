"""AutoStructured under batch dims from outside its plates: particles, Predictive,
a user's plate stack. Compared with exact Gaussian posteriors and with Pyro."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.infer.autoguide as oracle
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceEnum_ELBO

import guide_core

AutoStructured = guide_core.AutoStructured


def observed():
    """The data, made under the test's default dtype and device."""
    return torch.tensor([0.5, -1.0, 2.0])


def batch_model(data):
    with pyro.plate("data", len(data)):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)


def tree_model(data):
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(data)):
        y = pyro.sample("y", dist.Normal(x, 1.0))
        pyro.sample("obs", dist.Normal(y, 1.0), obs=data)


def exact_posterior(model, data):
    """Return ``(sites, mean, cov, log evidence)``; ``mean`` and ``cov`` are over
    the sites' values laid end to end in the guide's order."""
    n = len(data)
    if model is batch_model:
        cov = 0.5 * torch.eye(n)
        marginal = dist.MultivariateNormal(torch.zeros(n), 2.0 * torch.eye(n))
        return ["loc"], cov @ data, cov, marginal.log_prob(data)
    precision = torch.zeros(n + 1, n + 1)
    precision[0, 0] = 1.0 + n
    precision[0, 1:] = precision[1:, 0] = -1.0
    precision[1:, 1:] = 2.0 * torch.eye(n)
    cov = torch.linalg.inv(precision)
    mean = cov @ torch.cat([torch.zeros(1), data])
    marginal = dist.MultivariateNormal(
        torch.zeros(n), 2.0 * torch.eye(n) + torch.ones(n, n)
    )
    return ["x", "y"], mean, cov, marginal.log_prob(data)


def set_to_exact(guide, model, data, conditional):
    """Set a guide's parameters so that it *is* the exact posterior.

    Block ``k`` of the Cholesky factor of the posterior covariance gives the
    site's own noise (its diagonal block) and its shear by the upstream noise
    (``L_kj L_jj^-1``), which is how AutoStructured composes noise.
    """
    sites, mean, cov, _ = exact_posterior(model, data)
    guide(data)
    chol = torch.linalg.cholesky(cov)
    bounds = {"loc": (0, len(data)), "x": (0, 1), "y": (1, 1 + len(data))}
    for name in sites:
        lo, hi = bounds[name]
        own = chol[lo:hi, lo:hi]
        setattr(guide.locs, name, mean[lo:hi])
        if conditional == "normal":
            torch.testing.assert_close(own, torch.diag(own.diagonal()))
            setattr(guide.scales, name, own.diagonal())
        else:
            setattr(guide.scales, name, torch.ones(hi - lo))
            setattr(guide.scale_trils, name, own)
    if "y" in sites:
        shear = chol[1:, :1] @ torch.linalg.inv(chol[:1, :1])
        with torch.no_grad():
            guide.deps.y.x.weight.copy_(shear)


ELBOS = {
    "trace": lambda n: Trace_ELBO(num_particles=n, vectorize_particles=True),
    "enum": lambda n: TraceEnum_ELBO(num_particles=n, vectorize_particles=True),
}


@pytest.mark.parametrize("elbo", sorted(ELBOS))
@pytest.mark.parametrize("conditional", ["normal", "mvn"])
@pytest.mark.parametrize("model", [batch_model, tree_model], ids=["batch", "tree"])
def test_vectorized_elbo_at_the_exact_posterior_is_the_log_evidence(
    model, conditional, elbo
):
    data = observed()
    # With the guide equal to the posterior, every particle's log p - log q is
    # log p(data): any error in the batch dims shows up in the loss exactly.
    guide = AutoStructured(model, conditionals=conditional, dependencies="linear")
    set_to_exact(guide, model, data, conditional)
    evidence = exact_posterior(model, data)[3]
    loss = Trace_ELBO().loss(model, guide, data)
    torch.testing.assert_close(torch.tensor(-loss), evidence, atol=1e-4, rtol=0)
    loss = ELBOS[elbo](16).loss(model, guide, data)
    torch.testing.assert_close(torch.tensor(-loss), evidence, atol=1e-4, rtol=0)


@pytest.mark.parametrize("conditional", ["normal", "mvn"])
@pytest.mark.parametrize("model", [batch_model, tree_model], ids=["batch", "tree"])
def test_predictive_in_parallel_draws_the_exact_posterior(model, conditional):
    data = observed()
    guide = AutoStructured(model, conditionals=conditional, dependencies="linear")
    set_to_exact(guide, model, data, conditional)
    sites, mean, cov, _ = exact_posterior(model, data)
    num_samples = 20000
    predictive = Predictive(
        model, guide=guide, num_samples=num_samples, parallel=True, return_sites=sites
    )
    with torch.no_grad():
        samples = predictive(data)
    shapes = {"loc": (num_samples, 3), "x": (num_samples, 1), "y": (num_samples, 3)}
    assert {name: samples[name].shape for name in sites} == {
        name: shapes[name] for name in sites
    }
    draws = torch.cat([samples[name].reshape(num_samples, -1) for name in sites], -1)
    torch.testing.assert_close(draws.mean(0), mean, atol=0.04, rtol=0)
    torch.testing.assert_close(draws.T.cov(), cov, atol=0.03, rtol=0)


def shapes_model():
    pyro.sample("z1", dist.Normal(0.0, 1.0))
    pyro.sample("z2", dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1))
    with pyro.plate("plate", 3):
        pyro.sample("z3", dist.Normal(torch.zeros(3), torch.ones(3)))
    pyro.sample("z4", dist.MultivariateNormal(torch.zeros(2), torch.eye(2)))
    pyro.sample("z5", dist.Dirichlet(torch.ones(3)))
    pyro.sample(
        "z6", dist.Normal(0, 1).expand((2,)).mask(torch.arange(2) > 0).to_event(1)
    )


def _particle_trace(cls, conditional, num_particles):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = cls(shapes_model, conditionals=conditional)
    elbo = TraceEnum_ELBO(
        num_particles=num_particles, vectorize_particles=True, max_plate_nesting=2
    )
    elbo.loss(shapes_model, guide)  # create the parameters
    pyro.set_rng_seed(1)
    loss = elbo.loss(shapes_model, guide)
    with pyro.plate("particles", num_particles, dim=-3):
        trace = poutine.trace(guide).get_trace()
    shapes = {
        name: site["value"].shape
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
    }
    return loss, shapes


@pytest.mark.parametrize("conditional", ["mvn", "normal"])
def test_vectorized_particles_under_trace_enum_elbo_match_pyro(conditional):
    loss, shapes = _particle_trace(AutoStructured, conditional, 10)
    expected_loss, expected_shapes = _particle_trace(
        oracle.AutoStructured, conditional, 10
    )
    assert shapes == expected_shapes
    assert shapes["z1"] == (10, 1, 1) and shapes["z3"] == (10, 1, 3)
    assert shapes["z5"] == (10, 1, 1, 3)
    assert loss == pytest.approx(expected_loss, rel=1e-5)


def replay_model():
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    with pyro.plate("i", 2, dim=-2):
        c = pyro.sample("c", dist.Normal(a, 1.0))
        with pyro.plate("j", 3, dim=-1):
            d = pyro.sample("d", dist.Normal(c, 1.0))
            pyro.sample("obs", dist.Normal(d, 1.0), obs=torch.zeros(2, 3))


def _replay(cls, sample_shape):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = cls(replay_model)
    guide()
    with pyro.plate_stack("particles", sample_shape, rightmost_dim=-3):
        guide_trace = poutine.trace(guide).get_trace()
        model_trace = poutine.trace(
            poutine.replay(replay_model, guide_trace)
        ).get_trace()
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    return guide_trace, model_trace


@pytest.mark.parametrize("sample_shape", [(6,), (5, 4)], ids=str)
def test_replay_under_an_outer_plate_stack_matches_pyro(sample_shape):
    guide_trace, model_trace = _replay(AutoStructured, sample_shape)
    expected_guide, expected_model = _replay(oracle.AutoStructured, sample_shape)
    shapes = {"a": (1, 1), "c": (2, 1), "d": (2, 3)}
    for name, shape in shapes.items():
        assert guide_trace.nodes[name]["value"].shape == sample_shape + shape
        assert model_trace.nodes[name]["value"].shape == sample_shape + shape
        for trace, expected in [
            (guide_trace, expected_guide),
            (model_trace, expected_model),
        ]:
            torch.testing.assert_close(
                trace.nodes[name]["value"], expected.nodes[name]["value"]
            )
            torch.testing.assert_close(
                trace.nodes[name]["log_prob"], expected.nodes[name]["log_prob"]
            )


def test_outer_batch_inside_the_models_plates_is_an_error_naming_the_site():
    data = observed()
    guide = AutoStructured(batch_model, conditionals="normal")
    guide(data)
    with pytest.raises(ValueError, match="site 'loc' has outer batch shape \\(3,\\)"):
        with pyro.plate("bad", 3, dim=-1):
            guide(data)


@pytest.mark.slow
@pytest.mark.parametrize("conditional", ["normal", "mvn"])
@pytest.mark.parametrize("model", [batch_model, tree_model], ids=["batch", "tree"])
def test_svi_with_vectorized_particles_fits_the_exact_posterior(model, conditional):
    data = observed()
    guide = AutoStructured(model, conditionals=conditional, dependencies="linear")
    elbo = Trace_ELBO(num_particles=50, vectorize_particles=True)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.02}), elbo)
    for _ in range(1500):
        svi.step(data)
    sites, mean, cov, _ = exact_posterior(model, data)
    num_samples = 20000
    with torch.no_grad(), pyro.plate("particles", num_samples, dim=-2):
        values = guide(data)
    draws = torch.cat([values[name].reshape(num_samples, -1) for name in sites], -1)
    torch.testing.assert_close(draws.mean(0), mean, atol=0.08, rtol=0)
    torch.testing.assert_close(draws.std(0), cov.diagonal().sqrt(), atol=0.0, rtol=0.1)
