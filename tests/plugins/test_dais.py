"""The dais family: AutoDAIS, differentiable annealed importance sampling."""

from __future__ import annotations

import math

import guide_plugins.dais as dais
import pyro
import pyro.distributions as dist
import pytest
import torch
import toys
from guide_plugins.continuous import AutoMultivariateNormal
from guide_plugins.dais import AutoDAIS
from plugin_helpers import family_registered
from pyro.infer import Trace_ELBO

from guide_core import init_to_median, registry

A = torch.tensor([[1.0, 0.9], [0.6, 1.0], [0.2, -0.5]])
NOISE = 0.5
Y = torch.tensor([0.7, -0.4, 1.1])


def gaussian_model(y=Y):
    """z ~ N(0, I_2) seen through A with noise: a correlated Gaussian posterior."""
    z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    pyro.sample("y", dist.Normal(A @ z, NOISE).to_event(1), obs=y)


def exact(y=Y):
    """The exact posterior's mean and Cholesky factor, and log p(y)."""
    cov = torch.linalg.inv(torch.eye(2) + A.T @ A / NOISE**2)
    mean = cov @ A.T @ y / NOISE**2
    marginal = A @ A.T + NOISE**2 * torch.eye(3)
    evidence = dist.MultivariateNormal(torch.zeros(3), marginal).log_prob(y)
    return mean, torch.linalg.cholesky(cov), evidence.item()


def banana():
    """A normalized banana-shaped prior with no data: log p(x) = 0 exactly (the K
    test's; the comparison with AutoMultivariateNormal uses ``toys.banana``)."""
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    pyro.sample("b", dist.Normal(a * a, 0.4))


def constrained_model():
    """One unconstrained vector and one positive site (a log-det)."""
    z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    s = pyro.sample("s", dist.LogNormal(0.0, 0.5))
    pyro.sample("y", dist.Normal(z.sum(), s), obs=torch.tensor(0.3))


def exact_guide(K, eta, shift=0.0):
    """An AutoDAIS whose q0 is the exact posterior (shifted by ``shift``)."""
    pyro.clear_param_store()
    guide = AutoDAIS(
        gaussian_model, K=K, base_dist="cholesky", eta_init=eta, eta_max=2 * eta
    )
    guide()
    mean, tril, _ = exact()
    with torch.no_grad():
        guide.z_0_loc.copy_(mean + shift)
    guide.z_0_scale = tril.diagonal()
    guide.z_0_scale_tril = tril / tril.diagonal()[:, None]
    return guide


def log_weights(guide, n, *args):
    return torch.stack([guide.log_weight(*args).detach() for _ in range(n)])


# -- the bound --------------------------------------------------------------------


@pytest.mark.parametrize("K", [1, 2, 3, 4])
def test_the_exact_posterior_base_with_a_tiny_step_gives_the_evidence(K):
    torch.manual_seed(K)
    guide = exact_guide(K, eta=1e-5)
    evidence = exact()[2]
    lw = log_weights(guide, 10)
    assert torch.allclose(lw, torch.full_like(lw, evidence), atol=1e-4)
    elbo = -Trace_ELBO(num_particles=5).loss(gaussian_model, guide)
    assert elbo == pytest.approx(evidence, abs=1e-4)


@pytest.mark.parametrize("K", [1, 2, 3, 4])
def test_the_bound_is_below_the_evidence_and_the_weight_unbiased(K):
    """E[log w] <= log p(y) <= log E[w], with E[w] = p(y) (AIS is unbiased)."""
    torch.manual_seed(K)
    evidence = exact()[2]
    lw = log_weights(exact_guide(K, eta=0.2), 120)
    se = lw.std().item() / math.sqrt(len(lw))
    assert lw.mean().item() <= evidence + 3 * se
    assert lw.logsumexp(0).item() - math.log(len(lw)) == pytest.approx(
        evidence, abs=0.03
    )
    lw = log_weights(exact_guide(K, eta=0.2, shift=0.3), 40)
    assert lw.mean().item() < evidence - 0.2  # a wrong base: strictly below


def test_trace_elbo_is_the_log_weight():
    """The ELBO of the model and the guide is log w of the same trajectory."""
    pyro.clear_param_store()
    guide = AutoDAIS(constrained_model, K=3, eta_init=0.05)
    guide()
    pyro.set_rng_seed(3)
    elbo = -Trace_ELBO().differentiable_loss(constrained_model, guide)
    pyro.set_rng_seed(3)
    assert elbo.item() == pytest.approx(guide.log_weight().item(), abs=1e-4)


# -- the guide ----------------------------------------------------------------------


@pytest.mark.parametrize("base_dist", ["diagonal", "cholesky"])
def test_smoke_shapes_finite_loss_and_gradients_to_every_param(base_dist):
    pyro.clear_param_store()
    guide = AutoDAIS(constrained_model, K=3, base_dist=base_dist)
    trace = pyro.poutine.trace(guide).get_trace()
    assert trace.nodes["_AutoDAIS_latent"]["value"].shape == (3,)
    assert trace.nodes["_AutoDAIS_latent"]["infer"]["is_auxiliary"]
    assert trace.nodes["z"]["value"].shape == (2,)
    assert trace.nodes["s"]["value"] > 0
    assert "y" not in trace.nodes  # the inner model runs leak nothing
    names = {"z_0_loc", "z_0_scale", "eta_coeff", "gamma", "mass_matrix"}
    names |= {"beta_increments"} | (
        {"z_0_scale_tril"} if base_dist != "diagonal" else set()
    )
    store = set(pyro.get_param_store().keys())
    assert store == {f"AutoDAIS.{n}" for n in names}
    loss = Trace_ELBO().differentiable_loss(constrained_model, guide)
    assert torch.isfinite(loss)
    loss.backward()
    for name, param in guide.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert guide.betas[-1].item() == pytest.approx(1.0)
    assert (guide.betas.diff() > 0).all()
    assert 0 < guide.step_size.item() < guide.eta_max


def test_svi_steps_change_the_params():
    pyro.clear_param_store()
    guide = AutoDAIS(banana, K=2)
    svi = pyro.infer.SVI(banana, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(3):
        assert math.isfinite(svi.step())
    before = guide.step_size.item()
    svi.step()
    assert guide.step_size.item() != before


def fit_banana(K, steps, seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = AutoDAIS(banana, K=K, eta_init=0.1, eta_max=1.0, init_scale=0.5)
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.1 ** (1 / steps)})
    svi = pyro.infer.SVI(banana, guide, optim, Trace_ELBO(num_particles=2))
    for _ in range(steps):
        svi.step()
    pyro.set_rng_seed(seed + 100)
    return log_weights(guide, 400).mean().item()


@pytest.mark.slow
def test_the_elbo_improves_with_K_on_a_banana():
    bounds = {K: fit_banana(K, 300) for K in (1, 4)}
    assert bounds[4] <= 0.05 and bounds[1] <= 0.05  # log p(x) = 0
    assert bounds[4] > bounds[1] + 0.03, bounds


@pytest.mark.slow
@pytest.mark.parametrize("model", [toys.banana, toys.funnel], ids=lambda m: m.__name__)
def test_beats_a_full_normal_at_equal_steps(model):
    """The same steps, optimizer, particles and seed; ELBOs from 1000 draws each."""
    guides = {
        "dais": lambda m: AutoDAIS(m, K=4, eta_init=0.1, eta_max=1.0, init_scale=0.5),
        "mvn": AutoMultivariateNormal,
    }
    results = toys.fitted_elbos(
        model, guides, 300, 1000, vectorize=False, lr=0.05, lrd=0.1, particles=2
    )
    (dais, se_dais), (mvn, se_mvn) = results["dais"], results["mvn"]
    # measured (+- one MC error): banana -0.39 +- 0.02 vs -0.55 +- 0.02,
    # funnel -0.41 +- 0.03 vs -0.64 +- 0.03
    assert dais - mvn > 3 * math.hypot(se_dais, se_mvn), results
    assert dais > -0.55, results  # log p = 0: the gap is KL(q || p)


# -- summaries ----------------------------------------------------------------------


def test_median_and_quantiles_shapes_supports_and_seeding():
    pyro.clear_param_store()
    guide = AutoDAIS(constrained_model, K=2, init_loc_fn=init_to_median)
    guide.num_summary_samples = 40
    guide()
    median = guide.median()
    assert median["z"].shape == (2,) and median["s"].shape == ()
    assert median["s"] > 0
    quantiles = guide.quantiles([0.1, 0.5, 0.9])
    assert quantiles["z"].shape == (3, 2) and quantiles["s"].shape == (3,)
    assert (quantiles["z"][0] <= quantiles["z"][2]).all()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    again = guide.median()
    assert torch.equal(torch.get_rng_state(), state)  # training is not perturbed
    assert all(torch.equal(median[k], again[k]) for k in median)
    # a fresh guide that loads the state reproduces them
    fresh = AutoDAIS(constrained_model, K=2)
    fresh.num_summary_samples = 40
    fresh.load_state_dict(guide.state_dict())
    fresh()
    loaded = fresh.median()
    assert all(torch.allclose(median[k], loaded[k]) for k in median)


def test_save_and_load_through_guide_core_reproduce_the_sampled_summaries(tmp_path):
    pyro.clear_param_store()
    guide = AutoDAIS(constrained_model, K=2, base_dist="cholesky", eta_init=0.05)
    guide.num_summary_samples = 8
    svi = pyro.infer.SVI(
        constrained_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO()
    )
    for _ in range(3):
        svi.step()
    loaded = toys.assert_reloads_the_summaries(
        guide,
        tmp_path / "g.pt",
        constrained_model,
        lambda: AutoDAIS(constrained_model, K=2, base_dist="cholesky", eta_init=0.05),
        "z",
    )
    assert (loaded.K, loaded.base_dist, loaded.eta_init) == (2, "cholesky", 0.05)


def test_to_device(device):
    # built on the CPU, then moved: parameters, trajectories and summaries follow
    with torch.device("cpu"):
        guide = AutoDAIS(constrained_model, K=2, base_dist="cholesky")
        guide()
    guide.to(device)
    for name, param in guide.named_parameters():
        assert param.device.type == device.type, name
    assert guide()["z"].device.type == device.type
    guide.num_summary_samples = 5
    assert guide.median()["s"].device.type == device.type
    assert guide.quantiles([0.1, 0.9])["z"].device.type == device.type
    loss = Trace_ELBO().differentiable_loss(constrained_model, guide)
    assert loss.device.type == device.type and torch.isfinite(loss)


def test_float64_the_parameters_follow_the_model():
    y = torch.tensor(0.3, dtype=torch.float64)

    def model():
        z = pyro.sample("z", dist.Normal(y.new_zeros(2), 1.0).to_event(1))
        s = pyro.sample("s", dist.LogNormal(y.new_zeros(()), 0.5))
        pyro.sample("y", dist.Normal(z.sum(), s), obs=y)

    guide = AutoDAIS(model, K=2, base_dist="cholesky")
    loss = Trace_ELBO().differentiable_loss(model, guide)
    assert loss.dtype == torch.float64 and torch.isfinite(loss)
    loss.backward()
    for name, param in guide.named_parameters():
        assert param.dtype == torch.float64, name
        assert param.grad is not None and param.grad.dtype == torch.float64, name
    assert guide.step_size.dtype == guide.betas.dtype == torch.float64
    assert guide()["s"].dtype == torch.float64
    guide.num_summary_samples = 5
    assert guide.median()["z"].dtype == torch.float64
    assert guide.quantiles([0.1, 0.9])["s"].dtype == torch.float64


def test_get_posterior_is_refused_with_a_pointer():
    pyro.clear_param_store()
    guide = AutoDAIS(constrained_model)
    guide()
    with pytest.raises(NotImplementedError, match="median"):
        guide.get_posterior()
    assert guide.get_base_dist().event_shape == (3,)


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"K": 0}, "'K' must be an int >= 1.*0"),
        ({"K": 2.0}, "'K'"),
        ({"eta_max": 0.0}, "'eta_max' must be > 0: 0.0"),
        ({"eta_max": -1.0}, "'eta_max' must be > 0: -1.0"),
        ({"eta_init": 0.2, "eta_max": 0.1}, "'eta_init' must lie in .*0.2"),
        ({"gamma_init": 1.0}, r"'gamma_init' must lie in \(0, 1\): 1.0"),
        ({"gamma_init": 0.0}, "'gamma_init'.*0.0"),
        ({"base_dist": "full"}, "'base_dist' must be one of .*'full'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoDAIS(gaussian_model, **kwargs)


# -- the registry -------------------------------------------------------------------


@pytest.fixture
def registered():
    with family_registered(dais, "auto_dais"):
        yield


def test_registered_name_and_capabilities(registered):
    assert registry.families()["dais"] == ["auto_dais", "auto_semi_dais"]
    spec = registry.info("auto_dais")
    assert spec.factory is AutoDAIS
    caps = spec.capabilities
    assert not caps.subsample and not caps.discrete and not caps.jit
    guide = registry.make("auto_dais", gaussian_model, K=2)
    assert guide()["z"].shape == (2,)


def test_the_docs_example_runs_with_the_plugin_registered(registered, capsys):
    from pathlib import Path

    from test_docs import _code_block_after

    pyro.clear_param_store()
    page = Path(__file__).resolve().parents[2] / "docs" / "families" / "dais.rst"
    exec(_code_block_after(page.read_text(), "\nExample\n"), {})  # noqa: S102
    assert capsys.readouterr().out.strip()


def test_vectorized_particles_are_refused_not_shared_by_one_trajectory():
    """Every particle would get the same trajectory: a wrong ELBO, so an error."""

    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    guide = AutoDAIS(model, K=2)
    elbo = pyro.infer.Trace_ELBO(num_particles=3, vectorize_particles=True)
    with pytest.raises(NotImplementedError, match="one trajectory per call.*vectorize"):
        elbo.loss(model, guide)
    assert math.isfinite(pyro.infer.Trace_ELBO(num_particles=3).loss(model, guide))
