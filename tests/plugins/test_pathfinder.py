"""The pathfinder family: AutoPathfinder, init_loc_fn="pathfinder", and the
Pathfinder warm start of ``guide_core.fit``, checked on known posteriors."""

import pyro
import pyro.distributions as dist
import pytest
import torch

import guide_core
from guide_core import registry

MU = torch.tensor([10.0, -3.0, 200.0])
COV = torch.tensor([[1.0, 0.9, 0.2], [0.9, 2.0, 0.5], [0.2, 0.5, 0.5]])


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def correlated():
    dtype = torch.get_default_dtype()
    pyro.sample("x", dist.MultivariateNormal(MU.to(dtype), COV.to(dtype)))


def test_single_path_recovers_a_correlated_gaussian(float64):
    pyro.set_rng_seed(0)
    guide = registry.make("auto_pathfinder", correlated, num_paths=1, max_iters=50)
    run = guide.run()
    assert run.weights == (1.0,)
    loc, cov = guide.moments()
    assert torch.allclose(loc, MU.double(), atol=0.01)
    # the L-BFGS inverse Hessian is an estimate: exact up to its secant errors
    assert torch.allclose(cov, COV.double(), rtol=0.15, atol=0.05)
    median = guide.median()["x"]
    assert torch.allclose(median, MU.double(), atol=0.01)


@pytest.mark.slow
def test_multi_path_resampling_is_exact_on_a_gaussian(float64):
    pyro.set_rng_seed(1)
    guide = registry.make("auto_pathfinder", correlated, num_paths=4)
    guide.run()
    loc, cov = guide.moments()
    assert torch.allclose(loc, MU.double(), atol=0.1)
    assert torch.allclose(cov, COV.double(), rtol=0.15, atol=0.1)
    draws = guide_core.sample_posterior(guide, num_samples=2000)["x"]
    assert torch.allclose(draws.mean(0), MU.double(), atol=0.15)


def two_modes():
    x = pyro.sample("x", dist.Normal(0.0, 10.0))
    modes = torch.stack(
        [dist.Normal(-4.0, 0.5).log_prob(x), dist.Normal(4.0, 0.5).log_prob(x)]
    )
    pyro.factor("mix", torch.logsumexp(modes, 0))


@pytest.mark.slow
def test_multi_path_finds_both_modes_single_path_one():
    pyro.set_rng_seed(3)
    multi = registry.make("auto_pathfinder", two_modes, num_paths=8)
    multi.run()
    share = (multi.draws[:, 0] > 0).double().mean()
    assert 0.2 < float(share) < 0.8
    single = registry.make("auto_pathfinder", two_modes, num_paths=1)
    single.run()
    share = (single.draws[:, 0] > 0).double().mean()
    assert float(share) in (0.0, 1.0)


def far_regression(X, y):
    beta = pyro.sample("beta", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal(X @ beta, 1.0), obs=y)


def _far_data():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(40, 3, generator=gen, dtype=torch.float64) * torch.tensor(
        [1.0, 0.1, 5.0], dtype=torch.float64
    )
    y = X @ torch.tensor([1000.0, -500.0, 20.0], dtype=torch.float64)
    y = y + torch.randn(40, generator=gen, dtype=torch.float64)
    precision = torch.eye(3, dtype=torch.float64) + X.T @ X
    cov = torch.linalg.inv(precision)
    return X, y, cov @ (X.T @ y), cov


@pytest.mark.slow
@pytest.mark.parametrize("name", ["auto_multivariate_normal", "auto_normal"])
def test_fit_defaults_recover_a_posterior_far_from_the_prior(float64, name):
    X, y, mean, cov = _far_data()
    sd = cov.diagonal().sqrt()
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = registry.make(name, far_regression)
    result = guide_core.fit(
        far_regression, guide, X, y, start="pathfinder", progress=False, khat=False
    )
    assert result.start.startswith("warm start from Pathfinder")
    draws = guide_core.sample_posterior(guide, X, y, num_samples=4000)["beta"]
    assert ((draws.mean(0) - mean).abs() / sd).max() < 0.25
    if name == "auto_multivariate_normal":
        ratio = draws.std(0) / sd
        assert ((ratio > 0.8) & (ratio < 1.25)).all(), ratio
    # the old defaults, the same number of steps: nowhere near
    pyro.clear_param_store()
    old = registry.make(name, far_regression)
    guide_core.fit(
        far_regression,
        old,
        X,
        y,
        start=None,
        steps=result.steps + 100,
        progress=False,
        khat=False,
    )
    missed = old.median(X, y)["beta"]
    assert ((missed - mean).abs() / sd).max() > 10


@pytest.mark.slow
def test_init_to_pathfinder_starts_at_the_mode(float64):
    X, y, mean, cov = _far_data()
    pyro.set_rng_seed(0)
    guide = registry.make("auto_normal", far_regression, init_loc_fn="pathfinder")
    start = guide.median(X, y)["beta"]
    assert ((start - mean).abs() / cov.diagonal().sqrt()).max() < 0.5


def test_fit_runs_pathfinder_not_svi():
    pyro.set_rng_seed(0)
    guide = registry.make(
        "auto_pathfinder", correlated, num_paths=2, max_iters=50, num_draws=200
    )
    result = guide_core.fit(correlated, guide, progress=False, khat_samples=200)
    assert result.engine == "procedure"
    assert "pathfinder: 2 paths" in result.engine_reason
    assert result.gradient_evaluations > 0
    assert result.khat is not None and result.khat.value < 0.7


def test_errors_name_the_problem():
    def discrete():
        pyro.sample("k", dist.Bernoulli(0.3))

    with pytest.raises(ValueError, match="'k'"):
        registry.make("auto_pathfinder", discrete).run()
    with pytest.raises(ValueError, match="'num_paths' must be >= 1"):
        registry.make("auto_pathfinder", correlated, num_paths=0)

    def subsampled(y):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 10, subsample_size=5) as idx:
            pyro.sample("y", dist.Normal(loc, 1.0), obs=y[idx])

    with pytest.raises(ValueError, match="plate 'data' is subsampled"):
        registry.make("auto_pathfinder", subsampled).run(torch.zeros(10))


def bounded_by_an_error(obs):
    """``z`` with a N(0, 1) prior, ``obs ~ N(z, 0.3)``, and a model whose
    density is only defined for ``|z| < 3``: Cholesky fails outside."""
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    r = z / 3
    one = torch.ones_like(r)
    torch.linalg.cholesky(torch.stack([torch.stack([one, r]), torch.stack([r, one])]))
    pyro.sample("obs", dist.Normal(z, 0.3), obs=obs)


def test_points_where_the_model_raises_are_outside_the_support(float64):
    from scipy import stats

    pyro.set_rng_seed(0)
    obs = torch.tensor(2.9)
    guide = registry.make("auto_pathfinder", bounded_by_an_error, num_paths=4)
    run = guide.run(obs)
    draws = guide.draws[:, 0]
    assert bool((draws.abs() < 3).all())
    precision = 1 + 1 / 0.09
    loc, scale = (2.9 / 0.09) / precision, precision**-0.5
    exact = stats.truncnorm((-3 - loc) / scale, (3 - loc) / scale, loc, scale)
    assert float(draws.mean()) == pytest.approx(exact.mean(), abs=0.15 * scale)
    assert run.gradient_evaluations > 0


def test_save_and_load_round_trip(tmp_path):
    pyro.set_rng_seed(0)
    guide = registry.make(
        "auto_pathfinder", correlated, num_paths=2, max_iters=50, num_draws=200
    )
    guide.run()
    path = tmp_path / "pathfinder.pt"
    guide_core.save(guide, path)
    loaded = guide_core.load(path, correlated)
    assert torch.equal(loaded.median()["x"], guide.median()["x"])
    assert torch.equal(loaded.draws, guide.draws)
    assert bool(loaded.fitted)


def test_laplace_is_exact_on_a_correlated_gaussian(float64):
    # L-BFGS stopped after 3 iterations, far from the mode: Newton's method
    # with the exact Hessian still lands on the mean and covariance
    pyro.set_rng_seed(0)
    guide = registry.make("auto_pathfinder", correlated, num_paths=1, max_iters=3)
    guide.run()
    laplace = guide.laplace()
    assert laplace.reason == "Newton's method converged"
    assert torch.allclose(laplace.loc, MU.double(), atol=1e-8)
    assert torch.allclose(laplace.covariance, COV.double(), atol=1e-8)
    assert laplace.gradient_evaluations % 4 == 0  # (1 + D) per Newton step
    best = guide.best_gaussian()
    assert best.source.startswith("Laplace")
    assert torch.allclose(best.covariance, COV.double(), atol=1e-8)


def test_newton_stops_where_the_hessian_is_not_negative_definite(float64):
    from guide_plugins.pathfinder.laplace import gaussian_elbos, newton_mode

    def saddle(z):
        return -(z[0] ** 2) + z[1] ** 2

    found = newton_mode(saddle, torch.tensor([1.0, 1.0]))
    assert found.loc is None and "not negative definite" in found.reason

    def normal(zs):
        return dist.Normal(0.0, 1.0).log_prob(zs).sum(-1)

    eye = torch.eye(2)
    elbos = gaussian_elbos(normal, [(torch.zeros(2), eye), (torch.ones(2), eye)], 64)
    assert abs(float(elbos[0])) < 1e-12  # q = p: the ELBO is log Z = 0
    assert float(elbos[1]) < float(elbos[0])
    singular = gaussian_elbos(normal, [(torch.zeros(2), torch.zeros(2, 2))], 8)
    assert singular[0] == -float("inf")


def one_draw_regression(x, y):
    """Written for one draw at a time: ``x @ w`` with a vector ``w``."""
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(x @ w, s), obs=y)


def test_densities_of_a_model_for_one_draw_are_mapped_not_looped(float64):
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    y = x @ torch.tensor([1.0, -0.5, 0.2])
    guide = registry.make("auto_pathfinder", one_draw_regression)
    guide(x, y)
    zs = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    got = guide._log_densities(zs, (x, y), {})
    assert guide._vectorizes is False and guide._maps is True
    want = torch.stack([guide._log_density(z, (x, y), {}) for z in zs])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_psis_needs_no_tail_for_weights_equal_up_to_rounding():
    """An exact Gaussian's log weights differ by rounding only: the tail fit
    would divide by zero, so they are kept as they are, with k-hat -inf."""
    from guide_plugins.pathfinder.psis import psis_smooth

    g = torch.Generator().manual_seed(0)
    lw = 3.0 + 1e-15 * torch.randn(200, dtype=torch.float64, generator=g)
    smoothed, k = psis_smooth(lw)
    assert k == -float("inf")
    torch.testing.assert_close(smoothed, lw - lw.max())
    _, k = psis_smooth(torch.randn(200, dtype=torch.float64, generator=g))
    assert -float("inf") < k < float("inf")  # a tail was fitted
