"""The batched family: one Gaussian per element of the leading plates."""

from __future__ import annotations

import math

import guide_plugins.batched as batched
import pyro
import pyro.distributions as dist
import pytest
import torch
from guide_plugins.batched import (
    AutoBatchedLowRankMultivariateNormal,
    AutoBatchedMultivariateNormal,
)
from guide_plugins.continuous import AutoMultivariateNormal
from plugin_helpers import family_registered
from pyro import poutine
from pyro.infer import JitTrace_ELBO, Trace_ELBO

from guide_core import registry

CLASSES = [AutoBatchedMultivariateNormal, AutoBatchedLowRankMultivariateNormal]
NOISE = 0.5
A = torch.tensor([[1.0, 0.9], [0.6, 1.0], [0.2, -0.5]])


def linear_model(y):
    """Per plate element a 2-D z_i ~ N(0, I) seen through A: correlated posterior."""
    a = A.to(y)
    with pyro.plate("i", y.shape[0]):
        z = pyro.sample("z", dist.Normal(y.new_zeros(2), 1.0).to_event(1))
        pyro.sample("y", dist.Normal(z @ a.T, NOISE).to_event(1), obs=y)


def exact_posterior(y):
    """Mean ``(N, 2)``, covariance ``(2, 2)`` of each z_i, and log p(y)."""
    a = A.to(y)
    cov = torch.linalg.inv(torch.eye(2).to(y) + a.T @ a / NOISE**2)
    mean = y @ a @ cov / NOISE**2
    marginal = a @ a.T + NOISE**2 * torch.eye(3).to(y)
    evidence = dist.MultivariateNormal(y.new_zeros(3), marginal).log_prob(y).sum()
    return mean, cov, evidence


def mixed_model(y):
    """Two sites per element, one constrained (a log-det) and one vector."""
    with pyro.plate("i", y.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2).to(y), 1.0).to_event(1))
        s = pyro.sample("s", dist.LogNormal(y.new_zeros(()), 1.0))
        pyro.sample("y", dist.Normal(z.sum(-1), s), obs=y)


def data(n=5):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(1))


def make(cls, model, **kwargs):
    if cls is AutoBatchedLowRankMultivariateNormal:
        kwargs.setdefault("rank", 2)
    return cls(model, **kwargs)


def set_exact(guide, y):
    """Put the exact posterior of ``linear_model`` into the guide's parameters."""
    mean, cov, _ = exact_posterior(y)
    n = y.shape[0]
    chol = torch.linalg.cholesky(cov)
    with torch.no_grad():
        guide.loc.copy_(mean)
        if isinstance(guide, AutoBatchedMultivariateNormal):
            guide.scale = chol.diagonal().expand(n, 2).clone()
            guide.scale_tril = (chol / chol.diagonal()[:, None]).expand(n, 2, 2)
        else:  # diag(scale) (I + F F^T) diag(scale) = cov, with scale = sd / 2
            sd = cov.diagonal().sqrt()
            scale = sd / 2
            inner = cov / torch.outer(scale, scale) - torch.eye(2).to(y)
            factor = torch.linalg.cholesky(inner)
            guide.scale = scale.expand(n, 2).clone()
            guide.cov_factor.copy_(factor.expand(n, 2, 2))


# -- shapes, names, the ELBO ----------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_params_and_aux_site_names_and_shapes(cls):
    y = data(5)
    guide = make(cls, mixed_model)
    trace = poutine.trace(guide).get_trace(y[:, 0])
    name = cls.__name__
    assert trace.nodes[f"_{name}_latent"]["value"].shape == (5, 3)
    assert trace.nodes["z"]["value"].shape == (5, 2)
    assert trace.nodes["s"]["value"].shape == (5,)
    assert (trace.nodes["s"]["value"] > 0).all()
    store = {k: v.shape for k, v in pyro.get_param_store().items()}
    assert store[f"{name}.loc"] == (5, 3)
    assert store[f"{name}.scale"] == (5, 3)
    other = "scale_tril" if cls is AutoBatchedMultivariateNormal else "cov_factor"
    assert store[f"{name}.{other}"] == (
        (5, 3, 3) if other == "scale_tril" else (5, 3, 2)
    )
    assert guide.batch_shape == (5,) and guide.element_dim == 3
    assert guide.latent_dim == 15


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_element_b_holds_coordinates_b_of_every_site(cls):
    y = data(4)[:, 0]
    guide = make(cls, mixed_model)
    trace = poutine.trace(guide).get_trace(y)
    latent = trace.nodes[f"_{cls.__name__}_latent"]["value"]
    z, s = trace.nodes["z"]["value"], trace.nodes["s"]["value"]
    assert torch.allclose(latent[:, :2], z)
    assert torch.allclose(latent[:, 2], s.log())


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_the_exact_posterior_gives_the_evidence_with_zero_variance(cls):
    # With the exact posterior in its parameters, -ELBO = -log p(y) for any draw:
    # the density of the batched draw, its reordering and the plates are right.
    y = data(6)
    guide = make(cls, linear_model)
    guide(y)
    set_exact(guide, y)
    _, _, evidence = exact_posterior(y)
    losses = torch.tensor([Trace_ELBO().loss(linear_model, guide, y) for _ in range(5)])
    tol = 1e-3 * (1 if y.dtype == torch.float32 else 1e-4)
    assert torch.allclose(losses, -evidence.expand(5).to(losses), atol=tol * 50)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_vectorized_particles_and_jit(cls):
    y = data(5)[:, 0]
    guide = make(cls, mixed_model)
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    assert math.isfinite(elbo.loss(mixed_model, guide, y))
    svi = pyro.infer.SVI(mixed_model, guide, pyro.optim.Adam({"lr": 0.01}), elbo)
    assert all(math.isfinite(svi.step(y)) for _ in range(3))
    jit = JitTrace_ELBO(max_plate_nesting=1)
    assert math.isfinite(jit.loss(mixed_model, guide, y))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_median_and_quantiles_are_closed_form(cls):
    y = data(6)
    guide = make(cls, linear_model)
    guide(y)
    set_exact(guide, y)
    mean, cov, _ = exact_posterior(y)
    median = guide.median(y)
    assert median["z"].shape == (6, 2)
    assert torch.allclose(median["z"], mean, atol=1e-5)
    q = guide.quantiles([0.1, 0.5, 0.9], y)["z"]
    assert q.shape == (3, 6, 2)
    sd = cov.diagonal().sqrt()
    expected = mean + dist.Normal(0.0, 1.0).icdf(torch.tensor(0.9)).to(y) * sd
    assert torch.allclose(q[2], expected, atol=1e-4)
    assert torch.allclose(q[1], median["z"], atol=1e-5)


def test_constrained_median_and_quantiles():
    y = data(4)[:, 0]
    guide = AutoBatchedMultivariateNormal(mixed_model)
    guide(y)
    assert guide.median(y)["s"].shape == (4,)
    q = guide.quantiles([0.25, 0.75], y)["s"]
    assert q.shape == (2, 4) and (q > 0).all() and (q[0] < q[1]).all()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_batch_ndim_two(cls):
    def model():
        with pyro.plate("a", 3, dim=-2), pyro.plate("b", 4, dim=-1):
            pyro.sample("x", dist.Normal(0.0, 1.0))
            pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    guide = make(cls, model, batch_ndim=2)
    trace = poutine.trace(guide).get_trace()
    assert trace.nodes["x"]["value"].shape == (3, 4)
    assert trace.nodes["w"]["value"].shape == (3, 4, 2)
    assert guide.batch_shape == (3, 4) and guide.element_dim == 3
    assert guide.get_posterior().event_shape == (3, 4, 3)
    assert guide.quantiles([0.5])["w"].shape == (1, 3, 4, 2)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_float64_the_parameters_follow_the_model(cls):
    y = data(4).double()
    guide = make(cls, linear_model)
    loss = Trace_ELBO().differentiable_loss(linear_model, guide, y)
    assert loss.dtype == torch.float64
    loss.backward()
    for name, param in guide.named_parameters():
        assert param.dtype == torch.float64, name
        assert param.grad is not None and param.grad.dtype == torch.float64, name
    assert guide.median(y)["z"].dtype == torch.float64
    assert guide.quantiles([0.1, 0.9], y)["z"].dtype == torch.float64
    assert guide.get_posterior().sample().dtype == torch.float64
    assert guide(y)["z"].dtype == torch.float64


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_to_device(cls, device):
    # built on the CPU, then moved: parameters, draws and summaries follow
    with torch.device("cpu"):
        guide = make(cls, linear_model)
        guide(data(4))
    guide.to(device)
    y = data(4).to(device)
    for name, param in guide.named_parameters():
        assert param.device.type == device.type, name
    assert guide(y)["z"].device.type == device.type
    assert guide.median(y)["z"].device.type == device.type
    assert guide.quantiles([0.1, 0.9], y)["z"].device.type == device.type
    loss = Trace_ELBO().differentiable_loss(linear_model, guide, y)
    assert loss.device.type == device.type and torch.isfinite(loss)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_save_and_load_through_guide_core_reproduce_the_summaries(cls, tmp_path):
    from guide_core import load, save

    y = data(4)
    guide = make(cls, linear_model)
    fit(guide, y, steps=5)
    median, quantiles = guide.median(y), guide.quantiles([0.1, 0.9], y)
    save(guide, tmp_path / "g.pt")
    pyro.clear_param_store()
    untrained = make(cls, linear_model).median(y)["z"]
    assert not torch.allclose(untrained, median["z"])  # the fit moved them
    pyro.clear_param_store()
    loaded = load(tmp_path / "g.pt", linear_model, model_args=(y,))
    assert type(loaded) is cls and loaded.batch_ndim == guide.batch_ndim
    assert torch.equal(loaded.median(y)["z"], median["z"])
    assert torch.equal(loaded.quantiles([0.1, 0.9], y)["z"], quantiles["z"])


# -- errors ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1])
def test_batch_ndim_below_one(bad):
    with pytest.raises(ValueError, match="'batch_ndim' must be >= 1"):
        AutoBatchedMultivariateNormal(linear_model, batch_ndim=bad)
    with pytest.raises(TypeError, match="'batch_ndim' must be an int"):
        AutoBatchedMultivariateNormal(linear_model, batch_ndim=1.0)


def test_batch_ndim_larger_than_the_plates():
    guide = AutoBatchedMultivariateNormal(linear_model, batch_ndim=2)
    with pytest.raises(ValueError, match=r"site 'z' has shape \(4, 2\) with batch"):
        guide(data(4))


def test_a_global_site_is_refused():
    def model():
        pyro.sample("g", dist.Normal(0.0, 1.0))
        with pyro.plate("i", 3):
            pyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"leftmost 1 dim\(s\).*site 'g'"):
        AutoBatchedLowRankMultivariateNormal(model)()


def test_sites_disagreeing_on_the_batch_shape():
    def model():
        with pyro.plate("i", 3):
            pyro.sample("x", dist.Normal(0.0, 1.0))
        with pyro.plate("j", 4):
            pyro.sample("w", dist.Normal(0.0, 1.0))

    msg = r"site 'w' has batch shape \(4,\) in plates \['j'\].*site 'x' set the"
    with pytest.raises(ValueError, match=msg + r" expected batch shape \(3,\)"):
        AutoBatchedMultivariateNormal(model)()


def test_no_flat_transform_for_neutra():
    guide = AutoBatchedMultivariateNormal(linear_model)
    guide(data(3))
    with pytest.raises(NotImplementedError, match="NeuTraReparam"):
        guide.get_transform()


# -- the registry ---------------------------------------------------------------


@pytest.fixture
def registered():
    with family_registered(batched, "auto_batched_multivariate_normal"):
        yield


def test_registered_names_and_capabilities(registered):
    assert registry.families()["batched"] == [
        "auto_batched_low_rank_multivariate_normal",
        "auto_batched_multivariate_normal",
    ]
    spec = registry.info("auto_batched_multivariate_normal")
    assert spec.factory is AutoBatchedMultivariateNormal
    assert not spec.capabilities.subsample and not spec.capabilities.discrete
    guide = registry.make("auto_batched_low_rank_multivariate_normal", linear_model)
    assert guide(data(3))["z"].shape == (3, 2)


def test_the_docs_example_runs_with_the_plugin_registered(registered, capsys):
    from pathlib import Path

    from test_docs import _code_block_after

    page = Path(__file__).resolve().parents[2] / "docs" / "families" / "batched.rst"
    exec(_code_block_after(page.read_text(), "\nExample\n"), {})  # noqa: S102
    assert capsys.readouterr().out.strip()


# -- fitting --------------------------------------------------------------------


def fit(guide, y, steps, particles=8, lr=0.05):
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True)
    optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.01 ** (1 / steps)})
    svi = pyro.infer.SVI(linear_model, guide, optim, elbo)
    for _ in range(steps):
        svi.step(y)


def per_element(guide):
    """Means ``(N, 2)`` and covariances ``(N, 2, 2)`` of each z_i."""
    post = guide.get_posterior()
    if isinstance(guide, AutoMultivariateNormal) and not hasattr(guide, "batch_ndim"):
        n = post.mean.shape[-1] // 2
        cov = post.covariance_matrix.reshape(n, 2, n, 2)
        return post.mean.reshape(n, 2), torch.stack([cov[i, :, i] for i in range(n)])
    return post.base_dist.mean, post.base_dist.covariance_matrix


@pytest.mark.slow
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_svi_recovers_the_exact_posterior_like_a_full_normal(cls):
    y = data(6)
    mean, cov, _ = exact_posterior(y)
    guide = make(cls, linear_model)
    fit(guide, y, steps=600)
    n_batched = sum(v.numel() for v in pyro.get_param_store().values())
    m, c = per_element(guide)
    err_batched = ((m - mean).abs().max(), (c - cov).abs().max())
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    full = AutoMultivariateNormal(linear_model)
    fit(full, y, steps=600)
    n_full = sum(v.numel() for v in pyro.get_param_store().values())
    m, c = per_element(full)
    err_full = ((m - mean).abs().max(), (c - cov).abs().max())
    assert err_batched[0] < 0.05 and err_batched[1] < 0.03, err_batched
    assert err_full[0] < 0.05 and err_full[1] < 0.03, err_full
    assert n_batched * 2 < n_full


def test_a_short_fit_improves_the_elbo():
    y = data(4)
    guide = AutoBatchedMultivariateNormal(linear_model)
    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True)
    before = elbo.loss(linear_model, guide, y)
    fit(guide, y, steps=60)
    assert elbo.loss(linear_model, guide, y) < before


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_state_dict_loads_into_a_fresh_guide_before_its_first_call(cls):
    y = data(4)
    guide = make(cls, linear_model)
    fit(guide, y, steps=3)
    state = {k: v.detach().clone() for k, v in guide.state_dict().items()}
    pyro.clear_param_store()
    fresh = make(cls, linear_model)
    fresh.load_state_dict(state)
    assert torch.allclose(fresh.median(y)["z"], guide.median(y)["z"])
