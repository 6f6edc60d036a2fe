"""AutoSemiDAIS: a global guide, and DAIS per element of a subsampled plate.

The model is conjugate: ``mu ~ N(0, 1)``, ``z_i ~ N(mu, 1)``,
``y_i ~ N(z_i, 1)``, so the evidence, the posterior of ``mu`` and of each
``z_i``, and the conditional ``p(z_i | mu, y_i) = N((mu + y_i) / 2, 1/2)``
are known in closed form.
"""

from __future__ import annotations

import math

import guide_plugins.dais as dais
import pyro
import pyro.distributions as dist
import pytest
import torch
from guide_plugins.dais import AutoDAIS, AutoSemiDAIS
from guide_plugins.normal import AutoNormal
from plugin_helpers import family_registered
from pyro.infer import Trace_ELBO

from guide_core import AutoGuideList, registry

Y = torch.tensor([0.3, -1.2, 2.0, 0.7, 1.5, -0.4])
N = len(Y)


def global_model(M=N, y=None):
    """The global part; what it returns is what local_model is called with."""
    return pyro.sample("mu", dist.Normal(0.0, 1.0)), M, Y if y is None else y


def local_model(inputs):
    mu, M, y = inputs
    with pyro.plate("data", N, subsample_size=M) as idx:
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("y", dist.Normal(z, 1.0), obs=y[idx])


def model(M=N, y=None):
    local_model(global_model(M, y))


def exact_local_guide(inputs):
    """The exact conditional p(z_i | mu, y_i) as the start of the trajectories."""
    mu, M, y = inputs
    with pyro.plate("data", N, subsample_size=M) as idx:
        pyro.sample("z", dist.Normal((mu + y[idx]) / 2, math.sqrt(0.5)))


def exact(y=Y):
    """Posterior mean and variance of mu, and log p(y)."""
    precision = 1 + len(y) / 2
    mean = (y.sum() / 2 / precision).item()
    marginal = 2 * torch.eye(len(y)) + torch.ones(len(y), len(y))
    evidence = dist.MultivariateNormal(torch.zeros(len(y)), marginal).log_prob(y)
    return mean, 1 / precision, evidence.item()


def semi(local_guide=None, **kwargs):
    """An AutoSemiDAIS whose global guide q(mu) is the exact posterior."""
    guide = AutoSemiDAIS(
        model, local_model, AutoNormal(global_model), local_guide, **kwargs
    )
    guide()
    mean, var, _ = exact()
    with torch.no_grad():
        guide.global_guide.locs.mu.fill_(mean)
    guide.global_guide.scales.mu = torch.tensor(math.sqrt(var))
    return guide


def elbos(guide, n, *args):
    return torch.tensor([-Trace_ELBO().loss(model, guide, *args) for _ in range(n)])


# -- the bound ----------------------------------------------------------------------


@pytest.mark.parametrize("K", [1, 3])
def test_the_exact_posterior_with_a_tiny_step_gives_the_evidence(K):
    """Exact q(mu) and exact conditional starts: every ELBO sample is log p(y)."""
    pyro.clear_param_store()
    torch.manual_seed(K)
    guide = semi(exact_local_guide, K=K, eta_init=1e-6, eta_max=2e-6)
    values = elbos(guide, 8)
    assert torch.allclose(values, torch.full_like(values, exact()[2]), atol=1e-3)


def test_a_wrong_start_is_strictly_below_and_dais_steps_recover_part_of_it():
    """Gaussian starts fixed at the prior's conditional: the bound is below
    log p(y); annealing with a real step size does not make it worse."""
    evidence = exact()[2]
    bounds = {}
    for K, eta in ((1, 1e-6), (6, 0.4)):
        pyro.clear_param_store()
        torch.manual_seed(0)
        guide = semi(K=K, eta_init=eta, eta_max=1.0)
        with torch.no_grad():
            guide.z_0_loc.copy_(((exact()[0] + Y) / 2)[:, None])
        guide.z_0_scale = torch.full((N, 1), 0.9)
        values = elbos(guide, 60)
        se = values.std().item() / math.sqrt(len(values))
        bounds[K] = (values.mean().item(), se)
        assert values.mean().item() <= evidence + 3 * se
    (low, se_low), (high, se_high) = bounds[1], bounds[6]
    assert low < evidence - 0.1
    assert high > low - 2 * math.hypot(se_low, se_high), bounds


def test_subsampling_gives_an_unbiased_estimate_of_the_full_data_bound():
    pyro.clear_param_store()
    torch.manual_seed(1)
    guide = semi(K=2, eta_init=0.2, eta_max=0.5)
    # a missing N / M scale would be off by about 2/3 of the bound (~ -7)
    full, sub = elbos(guide, 40), elbos(guide, 200, 2)
    se = math.hypot(
        full.std().item() / math.sqrt(40), sub.std().item() / math.sqrt(200)
    )
    assert sub.mean().item() == pytest.approx(full.mean().item(), abs=4 * se)
    assert sub.std() > full.std()  # it is a subsample: noisier, not the same number


def test_the_elbo_is_the_global_terms_plus_the_scaled_local_log_weights():
    """A trace of the guide: only the subsample's elements, scaled by N / M."""
    pyro.clear_param_store()
    guide = AutoSemiDAIS(model, local_model, AutoNormal(global_model), K=2)
    trace = pyro.poutine.trace(guide).get_trace(2)
    assert trace.nodes["z"]["value"].shape == (2,)
    assert trace.nodes["_AutoSemiDAIS_latent"]["value"].shape == (2, 1)
    assert trace.nodes["_AutoSemiDAIS_latent"]["scale"] == pytest.approx(N / 2)
    assert trace.nodes["_AutoSemiDAIS_latent"]["infer"]["is_auxiliary"]
    model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace)).get_trace(2)
    idx = trace.nodes["data"]["value"]
    assert torch.equal(model_trace.nodes["data"]["value"], idx)  # one subsample
    assert "y" not in trace.nodes  # the inner runs leak nothing
    assert guide.step_size.shape == (N,) and (guide.step_size < guide.eta_max).all()
    assert guide.betas.shape == (N, 2)
    assert torch.allclose(guide.betas[:, -1], torch.ones(N))


# -- fitting ------------------------------------------------------------------------


def fit(guide, steps, lr=0.02, M=N):
    optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.1 ** (1 / steps)})
    svi = pyro.infer.SVI(model, guide, optim, Trace_ELBO(num_particles=2))
    for _ in range(steps):
        svi.step(M)
    return guide


@pytest.mark.slow
def test_a_fit_with_subsampling_recovers_the_posterior_of_mu_and_of_each_z():
    """An amortized start family containing the exact conditional, trained on
    subsamples of 3: q(mu) and the z_i marginals match the exact posterior."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)

    def local_guide(inputs):
        mu, M, _ = inputs
        a = pyro.param("a", torch.tensor(0.0))
        b = pyro.param("b", torch.zeros(N))
        s = pyro.param("s", torch.ones(N), constraint=dist.constraints.positive)
        with pyro.plate("data", N, subsample_size=M) as idx:
            pyro.sample("z", dist.Normal(a * mu + b[idx], s[idx]))

    guide = AutoSemiDAIS(model, local_model, AutoNormal(global_model), local_guide, K=2)
    fit(guide, 1500, lr=0.02, M=3)
    mean, var, _ = exact()
    assert guide.global_guide.locs.mu.item() == pytest.approx(mean, abs=0.08)
    assert guide.global_guide.scales.mu.item() ** 2 == pytest.approx(var, rel=0.3)
    guide.num_summary_samples = 1000
    q = guide.quantiles([0.1587, 0.5, 0.8413])
    z_mean, z_sd = (mean + Y) / 2, math.sqrt(0.5 + var / 4)
    assert torch.allclose(q["z"][1], z_mean, atol=0.12)
    assert torch.allclose(
        (q["z"][2] - q["z"][0]) / 2, torch.full((N,), z_sd), atol=0.12
    )


@pytest.mark.slow
def test_more_steps_give_a_better_fitted_bound():
    """Gaussian starts cannot follow mu; K = 4 trained steps close much of that
    gap (measured: K=1 -10.49 +- 0.06, K=4 -10.25 +- 0.03, log p(y) -10.13)."""
    results = {}
    for K in (1, 4):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        guide = AutoSemiDAIS(
            model,
            local_model,
            AutoNormal(global_model),
            K=K,
            eta_init=0.3,
            eta_max=1.0,
            init_scale=0.5,
        )
        fit(guide, 300, lr=0.03)
        values = elbos(guide, 200)
        results[K] = (values.mean().item(), values.std().item() / math.sqrt(200))
    (low, se_low), (high, se_high) = results[1], results[4]
    assert high > low + 3 * math.hypot(se_low, se_high), results
    assert high <= exact()[2] + 3 * se_high
    assert high > low + 0.1, results


# -- summaries, save/load, dtype ----------------------------------------------------


def test_median_and_quantiles_are_seeded_and_reproduced_after_loading():
    pyro.clear_param_store()
    guide = semi(exact_local_guide, K=1, eta_init=1e-6, eta_max=2e-6)
    guide.num_summary_samples = 100  # median's MC error about 0.09
    state = torch.get_rng_state()
    median = guide.median()
    assert torch.equal(torch.get_rng_state(), state)  # training is not perturbed
    mean, var, _ = exact()
    assert median["mu"].item() == pytest.approx(mean, abs=1e-5)  # the global guide's
    assert median["z"].shape == (N,)  # every element of the plate
    assert torch.allclose(median["z"], (mean + Y) / 2, atol=0.3)
    q = guide.quantiles([0.1, 0.5, 0.9])
    assert q["z"].shape == (3, N) and q["mu"].shape == (3,)
    assert torch.equal(q["z"][1], median["z"])  # the same seeded draws
    spread = (q["z"][2] - q["z"][0]) / (2 * 1.2816)
    assert torch.allclose(spread, torch.full((N,), math.sqrt(0.5 + var / 4)), atol=0.2)
    # a fresh guide with the state reproduces them before any call
    fresh_global = AutoNormal(global_model)
    fresh = AutoSemiDAIS(
        model,
        local_model,
        fresh_global,
        exact_local_guide,
        K=1,
        eta_init=1e-6,
        eta_max=2e-6,
    )
    fresh.num_summary_samples = 100
    fresh.load_state_dict(guide.state_dict())
    loaded = fresh.median()
    assert all(torch.allclose(loaded[k], v) for k, v in median.items())


def test_save_and_load_through_guide_core_reproduce_the_summaries(tmp_path):
    from guide_core import load, save

    pyro.clear_param_store()
    guide = AutoSemiDAIS(
        model,
        local_model,
        AutoNormal(global_model),
        K=2,
        prefix="semi",
        use_global_dais_params=True,
    )
    guide.num_summary_samples = 30
    fit(guide, 3)
    assert "semi.eta_coeff" in pyro.get_param_store()
    assert guide.eta_coeff.shape == () and guide.mass_matrix.shape == (1,)
    median = guide.median()
    save(guide, tmp_path / "g.pt", omit=["local_model", "global_guide"])
    pyro.clear_param_store()
    loaded = load(
        tmp_path / "g.pt",
        model,
        local_model=local_model,
        global_guide=AutoNormal(global_model),
    )
    loaded.num_summary_samples = 30
    again = loaded.median()
    assert all(torch.allclose(again[k], v) for k, v in median.items())


def test_float64_and_the_parameters_follow_the_model():
    pyro.clear_param_store()
    y = Y.double()

    def gm(M=N, y=y):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=y.dtype), 1.0))
        return mu, M

    def lm(inputs):
        mu, M = inputs
        with pyro.plate("data", N, subsample_size=M) as idx:
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("y", dist.Normal(z, 1.0), obs=y[idx])

    def m(M=N, y=y):
        lm(gm(M, y))

    guide = AutoSemiDAIS(m, lm, AutoNormal(gm), K=2)
    loss = Trace_ELBO().differentiable_loss(m, guide, 3)
    assert loss.dtype == torch.float64 and torch.isfinite(loss)
    loss.backward()
    for name, param in guide.named_parameters():
        assert param.dtype == torch.float64, name
    assert guide()["z"].dtype == torch.float64


def test_to_device(device):
    # built on the CPU, then moved with its global guide: parameters, the
    # trajectories and the summaries follow
    with torch.device("cpu"):
        guide = AutoSemiDAIS(model, local_model, AutoNormal(global_model), K=2)
        guide(3)
    guide.to(device)
    y = Y.to(device)
    for name, param in guide.named_parameters():
        assert param.device.type == device.type, name
    assert any(n.startswith("global_guide.") for n, _ in guide.named_parameters())
    draw = guide(3, y)
    assert draw["z"].device.type == draw["mu"].device.type == device.type
    guide.num_summary_samples = 5
    assert guide.median(N, y)["z"].device.type == device.type
    assert guide.quantiles([0.1, 0.9], N, y)["mu"].device.type == device.type
    loss = Trace_ELBO().differentiable_loss(model, guide, 3, y)
    assert loss.device.type == device.type and torch.isfinite(loss)


def test_no_global_latents_and_constrained_locals():
    """global_guide=None: the local model takes the model's own arguments."""

    def only_local(M=N):
        with pyro.plate("data", N, subsample_size=M) as idx:
            s = pyro.sample("s", dist.LogNormal(0.0, 0.5))
            pyro.sample("y", dist.Normal(0.0, s), obs=Y[idx])

    pyro.clear_param_store()
    guide = AutoSemiDAIS(only_local, only_local, K=2)
    draw = guide(4)
    assert draw["s"].shape == (4,) and (draw["s"] > 0).all()
    assert math.isfinite(Trace_ELBO().loss(only_local, guide, 4))


# -- errors -------------------------------------------------------------------------


def no_plate_model():
    pyro.sample("z", dist.Normal(0.0, 1.0))


def two_plates(M=2):
    with pyro.plate("a", N, subsample_size=M):
        pyro.sample("u", dist.Normal(0.0, 1.0))
    with pyro.plate("b", N, subsample_size=M):
        pyro.sample("v", dist.Normal(0.0, 1.0))


def wrong_local(inputs):
    mu, M, _ = inputs
    with pyro.plate("data", N, subsample_size=M):
        pyro.sample("w", dist.Normal(mu, 1.0))


def global_site_in_local(inputs):
    pyro.sample("extra", dist.Normal(0.0, 1.0))
    local_model(inputs)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: AutoSemiDAIS(no_plate_model, no_plate_model),
            "no latent site .* in a plate",
        ),
        (
            lambda: AutoSemiDAIS(two_plates, two_plates),
            r"several subsampled plates: \['a', 'b'\].*subsample_plate=",
        ),
        (
            lambda: AutoSemiDAIS(
                model, local_model, AutoNormal(global_model), subsample_plate="rows"
            ),
            r"subsample_plate='rows' is not a plate .*\['data'\]",
        ),
        (
            lambda: AutoSemiDAIS(model, wrong_local, AutoNormal(global_model)),
            r"local_model's latent sites \['w'\] do not match .*\['z'\]",
        ),
        (
            lambda: AutoSemiDAIS(model, global_site_in_local, AutoNormal(global_model)),
            "local_model's site 'extra' is not in the plate 'data'",
        ),
        (
            lambda: AutoSemiDAIS(model, local_model),
            r"global latent sites \['mu'\].*no global_guide",
        ),
        (
            lambda: AutoSemiDAIS(model, local_model, AutoNormal(model)),
            r"global_guide guides \['z'\], local",
        ),
    ],
)
def test_bad_models_are_refused_by_message(make, message):
    pyro.clear_param_store()
    with pytest.raises(ValueError, match=message):
        make()()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"K": 0}, ValueError, "'K' must be an int >= 1.*0"),
        ({"eta_init": 0.5, "eta_max": 0.1}, ValueError, "'eta_init' must lie in"),
        ({"gamma_init": 1.0}, ValueError, "'gamma_init' must lie in"),
        ({"init_scale": -1.0}, ValueError, "'init_scale' must be > 0"),
        (
            {"subsample_plate": 3},
            ValueError,
            "'subsample_plate' must be a non-empty str",
        ),
        ({"use_global_dais_params": 1}, ValueError, "'use_global_dais_params'"),
        (
            {"global_guide": lambda: None},
            TypeError,
            "'global_guide' must be a guide .* .model",
        ),
        ({"local_model": 3}, TypeError, "'local_model' must be callable"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    kwargs = {"local_model": local_model, **kwargs}
    with pytest.raises(error, match=message):
        AutoSemiDAIS(model, **kwargs)


def test_vectorized_particles_and_a_guide_list_are_refused():
    pyro.clear_param_store()
    guide = AutoSemiDAIS(model, local_model, AutoNormal(global_model), K=1)
    elbo = Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1)
    with pytest.raises(NotImplementedError, match="vectorize_particles=False"):
        elbo.loss(model, guide)
    listed = AutoGuideList(model)
    listed.append(AutoSemiDAIS(model, local_model, AutoNormal(global_model), K=1))
    with pytest.raises(
        ValueError, match="cannot be a part of an AutoGuideList.*global_guide="
    ):
        listed()
    with pytest.raises(NotImplementedError, match="median"):
        guide.get_posterior()


# -- AutoDAIS as a part of an AutoGuideList ------------------------------------------


def two_block_model():
    """a ~ N(0, 1), b ~ N(a, 0.5), y ~ N(a + b, 0.4): a correlated posterior."""
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.Normal(a, 0.5))
    pyro.sample("y", dist.Normal(a + b, 0.4), obs=torch.tensor(1.3))


def test_autodais_in_a_guide_list_targets_the_model_given_the_other_parts():
    """With b exact given a (the DAIS part's q0 is p(b | a, y) at a's value),
    a tiny step gives log w = log p(y, a) - log q(a): the bound of the list."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    listed = AutoGuideList(two_block_model)
    listed.append(AutoDAIS(pyro.poutine.block(two_block_model, expose=["b"]), K=2))
    listed.append(AutoNormal(pyro.poutine.block(two_block_model, expose=["a"])))
    trace = pyro.poutine.trace(listed).get_trace()
    order = [n for n in trace.nodes if n in ("a", "b")]
    assert order == ["a", "b"]  # the DAIS part runs after the part it conditions on
    part = listed[0]
    with torch.no_grad():
        part.z_0_loc.fill_(0.3)
    part.z_0_scale = torch.tensor([0.2])
    # the gradient of the target in b uses the list's a, not a prior draw:
    values = torch.tensor(
        [-Trace_ELBO().loss(two_block_model, listed) for _ in range(30)]
    )
    assert torch.isfinite(values).all()
    listed._sampled = {"a": torch.tensor(0.7)}
    try:
        target, given = listed._given_other_parts(part)
        lp = part._log_joint(torch.tensor([0.2]), (), {})
    finally:
        listed._sampled = None
    want = (
        dist.Normal(0.0, 1.0).log_prob(torch.tensor(0.7))
        + dist.Normal(0.7, 0.5).log_prob(torch.tensor(0.2))
        + dist.Normal(0.9, 0.4).log_prob(torch.tensor(1.3))
    )
    assert lp.item() == pytest.approx(want.item(), abs=1e-5)
    assert target is two_block_model and given["a"].item() == pytest.approx(0.7)
    median = listed.median()
    assert set(median) == {"a", "b"}
    with pytest.raises(RuntimeError, match="call the whole list"):
        part.log_weight()


def test_two_conditioning_parts_in_one_list_are_refused():
    listed = AutoGuideList(two_block_model)
    listed.append(AutoDAIS(pyro.poutine.block(two_block_model, expose=["a"]), K=1))
    listed.append(AutoDAIS(pyro.poutine.block(two_block_model, expose=["b"]), K=1))
    with pytest.raises(ValueError, match="neither can run before the other"):
        listed()


# -- the registry -------------------------------------------------------------------


@pytest.fixture
def registered():
    with family_registered(dais, "auto_semi_dais"):
        yield


def test_registered_name_and_capabilities(registered):
    spec = registry.info("auto_semi_dais")
    assert spec.factory is AutoSemiDAIS and spec.family == "dais"
    caps = spec.capabilities
    assert caps.subsample and not caps.discrete and not caps.jit
    assert caps.median and caps.quantiles
    guide = registry.make(
        "auto_semi_dais",
        model,
        local_model=local_model,
        global_guide=AutoNormal(global_model),
        K=1,
    )
    assert guide(2)["z"].shape == (2,)


def test_the_docs_example_runs_with_the_plugin_registered(registered, capsys):
    from pathlib import Path

    from test_docs import _code_block_after

    pyro.clear_param_store()
    page = Path(__file__).resolve().parents[2] / "docs" / "families" / "dais.rst"
    exec(_code_block_after(page.read_text(), "\nSemi-local example\n"), {})  # noqa: S102
    assert capsys.readouterr().out.strip()


def test_predictive_runs_the_trajectories_under_no_grad():
    """Predictive draws under torch.no_grad(); the dynamics still take gradients."""
    pyro.clear_param_store()
    guide = AutoSemiDAIS(model, local_model, AutoNormal(global_model), K=2)
    out = pyro.infer.Predictive(model, guide=guide, num_samples=3)(2)
    assert out["z"].shape == (3, 2) and torch.isfinite(out["z"]).all()
    single = AutoDAIS(global_model, K=2)
    with torch.no_grad():
        assert torch.isfinite(single()["mu"])


def test_the_models_own_subsample_indices_are_followed():
    def gm(idx):
        return pyro.sample("mu", dist.Normal(0.0, 1.0)), idx

    def lm(inputs):
        mu, idx = inputs
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("y", dist.Normal(z, 1.0), obs=Y[idx])

    def m(idx):
        lm(gm(idx))

    pyro.clear_param_store()
    guide = AutoSemiDAIS(m, lm, AutoNormal(gm), K=1)
    guide(torch.tensor([0, 1, 2]))
    idx = torch.tensor([4, 1])
    trace = pyro.poutine.trace(guide).get_trace(idx)
    assert torch.equal(trace.nodes["data"]["value"], idx)
    assert trace.nodes["z"]["value"].shape == (2,)
    assert math.isfinite(Trace_ELBO().loss(m, guide, idx))
    guide.num_summary_samples = 5
    assert guide.median(idx)["z"].shape == (2,)  # at the model's indices only
