"""The continuous family: differential tests against pyro.infer.autoguide."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.infer.autoguide as oracle
import pytest
import torch
from oracle import DATA, MODELS, assert_same_runs, run_svi, scalar_model
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import JitTrace_ELBO, Predictive, Trace_ELBO, TraceMeanField_ELBO

import guide_core
from guide_core import init_to_value, registry

NORMALS = [
    "AutoDiagonalNormal",
    "AutoMultivariateNormal",
    "AutoLowRankMultivariateNormal",
]
ALL = NORMALS + ["AutoLaplaceApproximation"]


def ours(name):
    return getattr(guide_core, name)


def train(make_guide, model, *args, steps=20, elbo=Trace_ELBO, lr=0.05):
    """Train from a fixed seed; return the guide, losses and param store."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = make_guide(model)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo())
    losses = [svi.step(*args) for _ in range(steps)]
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    return guide, losses, params


# -- differential against Pyro -------------------------------------------------


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("name", NORMALS)
def test_matches_pyro_parameters_losses_median_and_quantiles(name, model):
    mine = run_svi(ours(name), MODELS[model], DATA)
    pyros = run_svi(getattr(oracle, name), MODELS[model], DATA)
    assert_same_runs(mine, pyros)


@pytest.mark.parametrize("name", ALL)
def test_matches_pyro_under_jit_trace_elbo(name):
    model = MODELS["constrained"]
    mine = train(ours(name), model, DATA, steps=10, elbo=JitTrace_ELBO)
    pyros = train(getattr(oracle, name), model, DATA, steps=10, elbo=JitTrace_ELBO)
    torch.testing.assert_close(torch.tensor(mine[1]), torch.tensor(pyros[1]))
    assert sorted(mine[2]) == sorted(pyros[2])
    for key, value in pyros[2].items():
        torch.testing.assert_close(mine[2][key], value)


@pytest.mark.parametrize("model", ["scalar", "vector", "constrained"])
def test_laplace_matches_pyro_training_and_approximation(model):
    mine, losses, params = train(ours("AutoLaplaceApproximation"), MODELS[model], DATA)
    theirs, p_losses, p_params = train(
        oracle.AutoLaplaceApproximation, MODELS[model], DATA
    )
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(p_losses))
    assert sorted(params) == sorted(p_params) == ["AutoLaplaceApproximation.loc"]
    torch.testing.assert_close(
        params["AutoLaplaceApproximation.loc"], p_params["AutoLaplaceApproximation.loc"]
    )
    ours_mvn = mine.laplace_approximation(DATA)
    pyro_mvn = theirs.laplace_approximation(DATA)
    assert isinstance(ours_mvn, ours("AutoMultivariateNormal"))
    for key in ("loc", "scale", "scale_tril"):
        torch.testing.assert_close(
            getattr(ours_mvn, key), getattr(pyro_mvn, key), rtol=1e-4, atol=1e-5
        )
    assert dict(ours_mvn.named_buffers()).keys() == {"loc", "scale", "scale_tril"}
    levels = [0.1, 0.5, 0.9]
    expected_median = pyro_mvn.median(DATA)
    expected_quantiles = pyro_mvn.quantiles(levels, DATA)
    # the Laplace guide itself summarises like its approximation (Pyro's cannot)
    for guide in (ours_mvn, mine):
        median, quantiles = guide.median(DATA), guide.quantiles(levels, DATA)
        for key, value in expected_median.items():
            torch.testing.assert_close(median[key], value, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(
                quantiles[key], expected_quantiles[key], rtol=1e-4, atol=1e-5
            )


def test_laplace_away_from_a_minimum_is_a_clear_error_where_pyros_is_raw():
    model = MODELS["plated"]  # 20 steps leave tau where the density is not convex
    mine = train(ours("AutoLaplaceApproximation"), model, DATA)[0]
    theirs = train(oracle.AutoLaplaceApproximation, model, DATA)[0]
    with pytest.raises(torch.linalg.LinAlgError):
        theirs.laplace_approximation(DATA)
    with pytest.raises(ValueError, match="indefinite.*site\\(s\\) 'tau'\\."):
        mine.laplace_approximation(DATA)


def test_vectorized_particles_match_pyro():
    def elbo():
        return Trace_ELBO(
            num_particles=3, vectorize_particles=True, max_plate_nesting=2
        )

    model = MODELS["plated"]
    for name in NORMALS:
        mine = train(ours(name), model, DATA, steps=5, elbo=elbo)
        pyros = train(getattr(oracle, name), model, DATA, steps=5, elbo=elbo)
        torch.testing.assert_close(torch.tensor(mine[1]), torch.tensor(pyros[1]))


@pytest.mark.parametrize("name", ALL)
def test_sites_params_and_constraints_are_pyros(name):
    model = MODELS["constrained"]
    mine, theirs = ours(name)(model), getattr(oracle, name)(model)
    trace = poutine.trace(mine).get_trace(DATA)
    expected = poutine.trace(theirs).get_trace(DATA)
    assert list(trace.stochastic_nodes) == list(expected.stochastic_nodes)
    aux = f"_{name}_latent"
    assert trace.nodes[aux]["infer"] == {"is_auxiliary": True}
    for site in expected.stochastic_nodes:
        assert type(trace.nodes[site]["fn"]).__name__.endswith(
            type(expected.nodes[site]["fn"]).__name__
        )
    assert mine.latent_dim == theirs.latent_dim == 1 + 2 + 1 + 1 + 1
    assert sorted(mine.state_dict()) == sorted(theirs.state_dict())
    for attr in ("scale_constraint", "scale_tril_constraint"):
        if hasattr(theirs, attr):
            assert getattr(mine, attr) is getattr(theirs, attr)


# -- TraceMeanField_ELBO on constrained sites: the log-det stays in ------------


def _lognormal():
    pyro.sample("x", dist.LogNormal(0.0, 1.0))


def _half_normal(data):
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    with pyro.plate("n", len(data)):
        pyro.sample("obs", dist.Normal(0.0, sigma), obs=data)


def _same_guides(name, model, *args, loc, scale=0.5):
    """Ours and Pyro's guide with the same ``loc`` and ``scale`` (1 latent)."""
    mine = ours(name)(model)
    mine(*args)
    with torch.no_grad():
        mine.loc.fill_(loc)
        mine.scale = torch.tensor([scale])
    theirs = getattr(oracle, name)(model)
    theirs(*args)
    theirs.load_state_dict(mine.state_dict())
    return mine, theirs


def _loss(elbo, model, guide, *args, particles=20000):
    pyro.set_rng_seed(0)
    estimator = elbo(num_particles=particles, vectorize_particles=True)
    return estimator.loss(model, guide, *args)


@pytest.mark.parametrize("name", ["AutoDiagonalNormal", "AutoMultivariateNormal"])
def test_mean_field_elbo_keeps_the_log_det_of_constrained_sites(name):
    # x = exp(u), u ~ N(1.5, 0.5) under the guide and LogNormal(0, 1) = exp(N(0, 1))
    # under the model: the loss is KL(N(1.5, 0.5) || N(0, 1)) exactly (a KL is
    # invariant under a bijection); dropping log|dx/du| = u adds E[u] = 1.5.
    mine, theirs = _same_guides(name, _lognormal, loc=1.5)
    exact = math.log(1 / 0.5) + (0.5**2 + 1.5**2 - 1) / 2  # 1.443
    loss = _loss(TraceMeanField_ELBO, _lognormal, mine)
    assert abs(loss - exact) < 0.05  # ~ 4 Monte Carlo standard errors
    assert abs(_loss(TraceMeanField_ELBO, _lognormal, theirs) - exact - 1.5) < 0.05
    # a HalfNormal prior and data: ours is Trace_ELBO's estimate, draw for draw;
    # Pyro's is off by E[u] = loc = -0.3
    data = torch.tensor([0.5, -1.2, 2.0])
    mine, theirs = _same_guides(name, _half_normal, data, loc=-0.3)
    reference = _loss(Trace_ELBO, _half_normal, mine, data)
    assert _loss(Trace_ELBO, _half_normal, theirs, data) == pytest.approx(reference)
    loss = _loss(TraceMeanField_ELBO, _half_normal, mine, data)
    assert loss == pytest.approx(reference, rel=1e-5)
    pyros = _loss(TraceMeanField_ELBO, _half_normal, theirs, data)
    assert abs(pyros - reference + 0.3) < 0.05


@pytest.mark.parametrize("pyros", [False, True])
def test_mean_field_elbo_fits_the_prior_of_a_constrained_site(pyros):
    # With no data the posterior of u = log x is the prior N(0, 1); Pyro's loss,
    # KL + E[u], is smallest at a guide loc of -1 instead (a wrong posterior).
    make = oracle.AutoDiagonalNormal if pyros else ours("AutoDiagonalNormal")
    elbo = TraceMeanField_ELBO(num_particles=16, vectorize_particles=True)
    guide, _, _ = train(make, _lognormal, steps=300, elbo=lambda: elbo, lr=0.05)
    expected = -1.0 if pyros else 0.0
    assert abs(float(guide.loc.detach()) - expected) < 0.15


def test_checkpoints_load_between_ours_and_pyros():
    model = MODELS["constrained"]
    trained = run_svi(oracle.AutoMultivariateNormal, model, DATA, steps=10)
    state = {k: v.clone() for k, v in trained.guide.state_dict().items()}
    pyro.clear_param_store()
    mine = ours("AutoMultivariateNormal")(model)
    mine.load_state_dict(state)  # before any call
    for key, value in trained.median.items():
        torch.testing.assert_close(mine.median(DATA)[key], value)


def test_posterior_equals_base_pushed_through_transform():
    pyro.set_rng_seed(1)
    for name in NORMALS:
        guide = ours(name)(MODELS["constrained"])
        guide(DATA)
        if hasattr(guide, "cov_factor"):
            with torch.no_grad():
                guide.cov_factor.mul_(3.0)  # make the low-rank part matter
        posterior = guide.get_posterior()
        pushed = dist.TransformedDistribution(
            guide.get_base_dist(), guide.get_transform()
        )
        x = posterior.sample((5,))
        torch.testing.assert_close(
            pushed.log_prob(x), posterior.log_prob(x), atol=1e-3, rtol=1e-4
        )
        ys = pushed.sample((5,))
        torch.testing.assert_close(
            pushed.log_prob(ys), posterior.log_prob(ys), atol=1e-3, rtol=1e-4
        )


def test_low_rank_transform_is_a_square_root_of_the_covariance():
    torch.manual_seed(0)
    d, r = 6, 2
    guide = ours("AutoLowRankMultivariateNormal")(
        lambda: pyro.sample("z", dist.Normal(torch.zeros(d), 1.0).to_event(1)), rank=r
    )
    guide()
    with torch.no_grad():
        guide.cov_factor.normal_()
    transform = guide.get_transform()
    eye = torch.eye(d)
    root = (transform(eye) - guide.loc).T.detach()  # columns: images of e_i
    cov = guide.get_posterior().covariance_matrix.detach()
    torch.testing.assert_close(root @ root.T, cov, rtol=1e-4, atol=1e-5)
    z = torch.randn(4, d)
    x = transform(z)
    torch.testing.assert_close(transform.inv(x), z, rtol=1e-4, atol=1e-5)
    expected = torch.linalg.slogdet(root).logabsdet
    torch.testing.assert_close(transform.log_abs_det_jacobian(z, x)[0], expected)


def test_low_rank_quantiles_never_build_a_dense_matrix():
    d = 100_000  # a dense D x D float matrix would take 40 GB

    def model():
        pyro.sample("z", dist.Normal(torch.zeros(d), 1.0).to_event(1))

    guide = ours("AutoLowRankMultivariateNormal")(model, rank=3)
    q = guide.quantiles([0.25, 0.75])["z"]
    assert q.shape == (2, d)
    sd = guide.scale * (guide.cov_factor.pow(2).sum(-1) + 1).sqrt()
    expected = dist.Normal(guide.loc, sd).icdf(torch.tensor([[0.25], [0.75]]))
    torch.testing.assert_close(q, expected.detach())
    assert guide.get_transform()(torch.zeros(d)).shape == (d,)


# -- beyond Pyro: summaries of any subclass, the abstract base ------------------


def test_autocontinuous_is_importable_for_subclassing_but_not_made_by_name():
    AutoContinuous = guide_core.AutoContinuous
    assert issubclass(ours("AutoMultivariateNormal"), AutoContinuous)
    assert "auto_continuous" not in registry.names()

    class AutoStudent(AutoContinuous):
        def _setup_prototype(self, *args, **kwargs):
            super()._setup_prototype(*args, **kwargs)
            self.loc = torch.nn.Parameter(self._init_loc())

        def get_posterior(self, *args, **kwargs):
            return dist.StudentT(5.0, self.loc, 0.2).to_event(1)

    guide = AutoStudent(MODELS["plated"])
    guide.num_summary_samples = 4000
    guide(DATA)
    state = torch.get_rng_state()
    median = guide.median(DATA)
    assert torch.equal(torch.get_rng_state(), state)  # summaries do not disturb RNG
    torch.testing.assert_close(median, guide.median(DATA))  # and are reproducible
    assert median["mu"].shape == (2, 1) and median["tau"].shape == ()
    u_mu = guide.loc[1:].detach().reshape(2, 1)
    torch.testing.assert_close(median["mu"], u_mu, atol=0.03, rtol=0)
    q = guide.quantiles([0.05, 0.95], DATA)["mu"]
    width = torch.full((2, 1), 2 * 2.015048 * 0.2)  # t(5) quantile 0.95: 2.015048
    torch.testing.assert_close(q[1] - q[0], width, atol=0.06, rtol=0)


def test_predictive_and_guide_lists():
    model = MODELS["plated"]
    guide = ours("AutoMultivariateNormal")(model)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    svi.step(DATA)
    samples = Predictive(model, guide=guide, num_samples=7)(DATA)
    assert samples["mu"].shape == (7, 2, 1) and samples["tau"].shape == (7, 1, 1)
    parts = guide_core.AutoGuideList(model)
    parts.append(ours("AutoDiagonalNormal")(poutine.block(model, expose=["tau"])))
    parts.append(
        ours("AutoLowRankMultivariateNormal")(poutine.block(model, hide=["tau"]))
    )
    svi = pyro.infer.SVI(model, parts, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    assert torch.isfinite(torch.tensor(svi.step(DATA)))
    assert parts.quantiles([0.5], DATA)["mu"].shape == (1, 2, 1)


def test_float64_and_to_device(device):
    data = DATA.to(torch.float64)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        guide = ours("AutoLowRankMultivariateNormal")(MODELS["plated"])
        guide(data)
    finally:
        torch.set_default_dtype(old)
    assert guide.loc.dtype == torch.float64
    guide.to(device)
    assert guide.median(data)["mu"].device.type == torch.device(device).type


# -- exact posterior of Bayesian linear regression with known noise ------------


def _regression(n=40, prior_sd=2.0, noise=0.5):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, 2, generator=gen)
    y = x @ torch.tensor([1.0, -0.5]) + noise * torch.randn(n, generator=gen)

    def model(x, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(2), prior_sd).to_event(1))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal((x * w).sum(-1), noise), obs=y)

    precision = torch.eye(2) / prior_sd**2 + x.T @ x / noise**2
    cov = torch.linalg.inv(precision)
    mean = cov @ x.T @ y / noise**2
    return model, (x, y), mean, cov


def test_laplace_recovers_the_exact_regression_posterior():
    model, args, mean, cov = _regression()
    guide = ours("AutoLaplaceApproximation")(model)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    for _ in range(300):
        svi.step(*args)
    mvn = guide.laplace_approximation(*args).get_posterior()
    torch.testing.assert_close(mvn.loc, mean, atol=1e-3, rtol=0)
    torch.testing.assert_close(mvn.covariance_matrix, cov, atol=1e-5, rtol=1e-3)


def _fit_mvn(steps, model, args, lr):
    guide = ours("AutoMultivariateNormal")(model)
    optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.01 ** (1 / steps)})
    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    svi = pyro.infer.SVI(model, guide, optim, elbo)
    for _ in range(steps):
        svi.step(*args)
    return guide.get_posterior()


def test_multivariate_normal_recovers_the_regression_posterior_roughly():
    model, args, mean, cov = _regression()
    q = _fit_mvn(150, model, args, lr=0.1)
    sd = cov.diagonal().sqrt()
    assert ((q.loc - mean).abs() / sd).max() < 0.2
    assert ((q.covariance_matrix.diagonal().sqrt() / sd) - 1).abs().max() < 0.2


@pytest.mark.slow
def test_multivariate_normal_recovers_the_exact_regression_posterior():
    model, args, mean, cov = _regression()
    q = _fit_mvn(4000, model, args, lr=0.05)
    sd = cov.diagonal().sqrt()
    assert ((q.loc - mean).abs() / sd).max() < 0.05
    corr = cov / sd[:, None] / sd[None, :]
    fitted = q.covariance_matrix / sd[:, None] / sd[None, :]
    torch.testing.assert_close(fitted, corr, atol=0.06, rtol=0)


# -- bad input -----------------------------------------------------------------


def test_subsampled_local_latents_are_an_error_naming_the_plate():
    def model():
        with pyro.plate("rows", 10, subsample_size=3):
            pyro.sample("x", dist.Normal(0.0, 1.0))

    for name in ALL:
        with pytest.raises(ValueError, match="site 'x'.*subsampled plate 'rows'"):
            ours(name)(model)()


def test_no_latent_sites_is_an_error():
    def model():
        pyro.sample("obs", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0))

    with pytest.raises(RuntimeError, match="found no latent sites"):
        ours("AutoDiagonalNormal")(model)()


def test_discrete_site_is_an_error_naming_the_site():
    def model():
        pyro.sample("k", dist.Categorical(torch.ones(3)))

    with pytest.raises(ValueError, match="'k'") as err:
        ours("AutoMultivariateNormal")(model)()
    assert "poutine.block(model, hide=['k'])" in str(err.value)


@pytest.mark.parametrize("name", NORMALS)
def test_non_positive_init_scale_is_an_error(name):
    with pytest.raises(ValueError, match="'init_scale' must be > 0"):
        ours(name)(scalar_model, init_scale=-1.0)


@pytest.mark.parametrize("rank", [0, -2, 1.5, True])
def test_bad_rank_is_an_error(rank):
    with pytest.raises(ValueError, match="'rank' must be a positive int"):
        ours("AutoLowRankMultivariateNormal")(scalar_model, rank=rank)


def _flat():
    return dist.ImproperUniform(constraints.real, (), ())


def test_singular_hessian_is_an_error_naming_the_sites():
    def model():
        a = pyro.sample("a", _flat())
        b = pyro.sample("b", _flat())
        pyro.sample("c", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(a + b, 1.0), obs=torch.tensor(1.0))

    zero = torch.tensor(0.0)
    init = init_to_value(values={"a": zero, "b": zero, "c": zero})
    guide = ours("AutoLaplaceApproximation")(model, init_loc_fn=init)
    with pytest.raises(ValueError, match="singular.*site\\(s\\) 'a', 'b'\\.") as err:
        guide.laplace_approximation()
    assert "hessian_jitter" in str(err.value)
    with pytest.raises(ValueError, match="singular"):
        guide.quantiles([0.5])
    assert guide.median()["a"] == 0.0  # the point itself needs no Hessian
    guide.hessian_jitter = 1e-2
    cov = guide.laplace_approximation().get_posterior().covariance_matrix
    assert torch.isfinite(cov).all() and cov[0, 0] > 10


def test_indefinite_hessian_is_an_error_naming_the_site():
    def model():
        z = pyro.sample("z", _flat())
        pyro.sample("w", dist.Normal(0.0, 1.0))
        pyro.factor("bump", z**2 - z**4 / 4)  # a local minimum of the density at 0

    init = init_to_value(values={"z": torch.tensor(0.0), "w": torch.tensor(0.0)})
    guide = ours("AutoLaplaceApproximation")(model, init_loc_fn=init)
    with pytest.raises(ValueError, match="indefinite.*site\\(s\\) 'z'\\."):
        guide.laplace_approximation()
    with pytest.raises(ValueError, match="'hessian_jitter' must be >= 0"):
        ours("AutoLaplaceApproximation")(model, hessian_jitter=-1.0)


def test_the_own_draw_density_is_the_textbook_one_value_and_gradient():
    from guide_plugins.continuous.own_draw import OwnDrawMultivariateNormal

    torch.manual_seed(0)
    loc = torch.randn(2, 4, requires_grad=True)
    raw = torch.randn(4, 4)
    tril = (raw.tril(-1) + torch.diag(raw.diag().exp())).requires_grad_()
    mine = OwnDrawMultivariateNormal(loc, scale_tril=tril).expand((3, 2))
    z = mine.rsample((5,))
    lp = mine.log_prob(z)
    textbook = dist.MultivariateNormal(loc, scale_tril=tril).log_prob(z)
    torch.testing.assert_close(lp, textbook)
    # log q at the draw depends on loc only through terms that cancel: the
    # textbook gradient is zero up to rounding, the own draw's exactly zero
    g_mine = torch.autograd.grad(
        lp.sum(), [loc, tril], retain_graph=True, allow_unused=True
    )
    g_book = torch.autograd.grad(textbook.sum(), [loc, tril])
    # (the strict upper triangle is not a parameter of a Cholesky factor: its
    # gradient is masked by the constraint, and the solve never reads it)
    for a, b in zip(g_mine, g_book):
        a = torch.zeros_like(b) if a is None else a
        if b.dim() == 2:
            a, b = a.tril(), b.tril()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    other = z.detach().clone()  # not the draw: the textbook route
    torch.testing.assert_close(mine.log_prob(other), textbook.detach())
    torch.manual_seed(1)
    want = dist.MultivariateNormal(loc, scale_tril=tril).expand((3, 2)).rsample((5,))
    torch.manual_seed(1)
    assert torch.equal(mine.rsample((5,)), want)  # the same draws as torch's


def test_the_out_of_place_low_rank_normal_is_torchs_bit_for_bit():
    from guide_plugins.continuous.lowrank_normal import (
        FunctionalLowRankMultivariateNormal,
    )

    gen = torch.Generator().manual_seed(0)
    loc = torch.randn(3, 7, generator=gen).requires_grad_()
    factor = torch.randn(7, 2, generator=gen).requires_grad_()
    diag = torch.rand(7, generator=gen).add(0.1).requires_grad_()
    torchs = dist.LowRankMultivariateNormal(loc, factor, diag)
    mine = FunctionalLowRankMultivariateNormal(loc, factor, diag)
    assert isinstance(mine, dist.LowRankMultivariateNormal)
    assert torch.equal(mine._capacitance_tril, torchs._capacitance_tril)
    torch.manual_seed(1)
    z = torchs.rsample((5,))
    torch.manual_seed(1)
    assert torch.equal(mine.rsample((5,)), z)
    assert torch.equal(mine.log_prob(z), torchs.log_prob(z))
    wrt = [loc, factor, diag]
    want = torch.autograd.grad(torchs.log_prob(z).sum(), wrt, retain_graph=True)
    got = torch.autograd.grad(mine.log_prob(z).sum(), wrt, retain_graph=True)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    wide = mine.expand((5, 3))
    assert type(wide) is type(mine) and wide.batch_shape == (5, 3)
    assert torch.equal(wide.log_prob(z), torchs.expand((5, 3)).log_prob(z))
    with pytest.raises(ValueError, match="cov_factor must be a batch of matrices"):
        FunctionalLowRankMultivariateNormal(loc, factor[:3], diag)


@pytest.mark.slow
def test_low_rank_normal_compiles_and_recovers_the_regression_posterior():
    # torch's own LowRankMultivariateNormal writes in place through a strided
    # view, which inductor refuses: the guide could only be recorded
    model, args, mean, cov = _regression()
    guide = ours("AutoLowRankMultivariateNormal")(model, rank=2)
    result = guide_core.fit(
        model,
        guide,
        *args,
        optim=pyro.optim.ClippedAdam({"lr": 0.1, "lrd": 0.01 ** (1 / 1500)}),
        loss=Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1),
        steps=1500,
        tol=None,
        seed=0,
        engine="compiled",
        progress=False,
        khat=False,
    )
    assert result.engine == "compiled", result.engine_reason
    q = guide.get_posterior()
    sd = cov.diagonal().sqrt()
    assert ((q.loc - mean).abs() / sd).max() < 0.1
    assert ((q.covariance_matrix.diagonal().sqrt() / sd) - 1).abs().max() < 0.05


def test_the_factored_normal_is_torchs_mvn_and_never_forms_the_factor_on_a_draw():
    from guide_plugins.continuous.own_draw import FactoredMultivariateNormal

    torch.manual_seed(0)
    loc = torch.randn(2, 4, requires_grad=True)
    scale = torch.rand(4).add(0.5).requires_grad_()
    unit = (torch.randn(4, 4).tril(-1) + torch.eye(4)).requires_grad_()
    tril = scale[:, None] * unit
    mine = FactoredMultivariateNormal(loc, scale, unit)
    assert isinstance(mine, dist.MultivariateNormal)
    wide = mine.expand((3, 2))
    torch.manual_seed(1)
    z = wide.rsample((5,))
    assert "_unbroadcasted_scale_tril" not in wide.__dict__  # not built to draw
    lp = wide.log_prob(z)
    assert "_unbroadcasted_scale_tril" not in wide.__dict__  # nor for log q
    torchs = dist.MultivariateNormal(loc, scale_tril=tril).expand((3, 2))
    torch.manual_seed(1)
    torch.testing.assert_close(z, torchs.rsample((5,)))  # same noise, same draw
    torch.testing.assert_close(lp, torchs.log_prob(z))
    wrt = [loc, scale, unit]
    got = torch.autograd.grad(lp.sum(), wrt, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(torchs.log_prob(z).sum(), wrt, allow_unused=True)
    for a, b in zip(got, want):
        a = torch.zeros_like(b) if a is None else a
        if b.dim() == 2:  # the unit diagonal and upper triangle are not free
            a, b = a.tril(-1), b.tril(-1)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    other = z.detach().clone()
    torch.testing.assert_close(wide.log_prob(other), torchs.log_prob(other))
    torch.testing.assert_close(wide.scale_tril, torchs.scale_tril)
    torch.testing.assert_close(wide.covariance_matrix, torchs.covariance_matrix)
    torch.testing.assert_close(wide.entropy(), torchs.entropy())
    with pytest.raises(ValueError, match="needs loc \\(..., D\\), scale"):
        FactoredMultivariateNormal(loc, scale[:3], unit)
