"""AutoGaussian back ends agree with each other on plated models; the native
``sparse`` back end is exact, linear in plate sizes, and explains what it refuses."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from guide_plugins.gaussian.sparse import SparseGaussian
from pyro import poutine

import guide_core

AutoGaussian = guide_core.AutoGaussian


# -- plated models: nested plates, sibling plates, dependencies across plates ----


def nested_model(y):
    g = pyro.sample("g", dist.Normal(0.0, 1.0))
    s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
    with pyro.plate("i", 3, dim=-2):
        a = pyro.sample("a", dist.Normal(g, s))
        c = pyro.sample("c", dist.Normal(a, 1.0))
        with pyro.plate("j", 4, dim=-1):
            b = pyro.sample("b", dist.Normal(a + g, 1.0))
            pyro.sample("y", dist.Normal(b + c, 1.0), obs=y)


def sibling_model(y, z):
    g = pyro.sample("g", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("i", 3):
        x = pyro.sample("x", dist.Normal(g[0], 1.0))
        pyro.sample("yx", dist.Normal(x, 1.0), obs=y)
    with pyro.plate("j", 5):
        w = pyro.sample("w", dist.Dirichlet(torch.ones(3)))
        pyro.sample("zw", dist.Normal(w[..., 0] + g[1], 1.0), obs=z)


def across_model(y):
    """An observation in a plate its latents are not in, and a latent nested in
    a plate whose local depends on a global and an outer local."""
    g = pyro.sample("g", dist.Normal(0.0, 1.0))
    with pyro.plate("i", 3, dim=-1):
        x = pyro.sample("x", dist.Normal(g, 1.0))
        with pyro.plate("j", 2, dim=-2):
            h = pyro.sample("h", dist.Normal(x + g, 1.0))
            pyro.sample("y", dist.Normal(x + g, 1.0), obs=y)
            pyro.sample("yh", dist.Normal(h, 1.0), obs=y)


def crossed_model(y):
    """x in plate i and w in plate j meet in every cell y[j, i]: not a tree."""
    plate_i, plate_j = pyro.plate("i", 3, dim=-1), pyro.plate("j", 2, dim=-2)
    with plate_i:
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
    with plate_j:
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with plate_i, plate_j:
        pyro.sample("y", dist.Normal(x + w, 1.0), obs=y)


def outside_model(y):
    """A global that depends on every local of a plate (non-monotone)."""
    with pyro.plate("i", 3):
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
    t = pyro.sample("t", dist.Normal(x.sum(), 1.0))
    pyro.sample("y", dist.Normal(t, 1.0), obs=y)


def _data(shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(
        torch.get_default_dtype()
    )


PLATED = {
    "nested": (nested_model, lambda: (_data((3, 4)),)),
    "siblings": (sibling_model, lambda: (_data((3,)), _data((5,)))),
    "across": (across_model, lambda: (_data((2, 3)),)),
}


def _guides(model, args, backends=("dense", "sparse")):
    """Build one guide per back end, all with the same random parameters."""
    guides = {}
    for backend in backends:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        guides[backend] = AutoGaussian(model, backend=backend)
        guides[backend](*args)
    with torch.no_grad():
        for p in guides[backends[0]].parameters():
            p.add_(0.3 * torch.randn_like(p))
    state = guides[backends[0]].state_dict()
    for guide in guides.values():
        guide.load_state_dict(state)
    return guides


@pytest.mark.parametrize("name", sorted(PLATED))
def test_sparse_is_the_dense_distribution(name):
    model, make_args = PLATED[name]
    args = make_args()
    guides = _guides(model, args)
    dense, sparse = guides["dense"], guides["sparse"]
    mvn = dense._dense_layout.mvn(dense._factor_params)
    ours = poutine.trace(sparse._sample_aux_values).get_trace(temperature=1.0)
    latent = ours.nodes["_AutoGaussianSparse_latent"]["fn"]
    # log-densities at the same points, batched
    z = mvn.sample((5, 2))
    torch.testing.assert_close(latent.log_prob(z), mvn.log_prob(z))
    # exact means, marginal scales, medians and quantiles
    torch.testing.assert_close(latent.mean, mvn.mean)
    for (m1, s1), (m2, s2) in zip(
        sparse._aux_moments().values(), dense._aux_moments().values()
    ):
        torch.testing.assert_close(m1, m2)
        torch.testing.assert_close(s1, s2)
    for summary in [
        lambda g: g.median(*args),
        lambda g: g.quantiles([0.2, 0.7], *args),
    ]:
        a, b = summary(sparse), summary(dense)
        for site in b:
            torch.testing.assert_close(a[site], b[site])
    # sample moments of the draws, within 5 standard errors
    n = 4000
    draws = latent.rsample((n,))
    cov = mvn.covariance_matrix
    std = cov.diagonal().sqrt()
    assert ((draws.mean(0) - mvn.mean).abs() < 5 * std / n**0.5).all()
    bound = 5 * (2 / n) ** 0.5 * std[:, None] * std[None, :]
    assert ((torch.cov(draws.T) - cov).abs() < bound).all()
    # the whole guide: same values and log-density for the same aux draw
    flat = z[0, 0]
    traces = {
        b: poutine.trace(
            poutine.condition(g, {f"_{type(g).__name__}_latent": flat})
        ).get_trace(*args)
        for b, g in guides.items()
    }
    assert traces["sparse"].log_prob_sum().item() == pytest.approx(
        traces["dense"].log_prob_sum().item(), rel=1e-5, abs=1e-4
    )


@pytest.mark.parametrize("name", sorted(PLATED))
def test_density_of_a_draw_is_the_recomputed_density(name):
    """rsample returns its own log-density (log N(eps) + log det L): the same
    value and parameter gradient as recomputing it at the drawn point."""
    model, make_args = PLATED[name]
    guide = _guides(model, make_args(), backends=("sparse",))["sparse"]
    params = [p for _, p in guide.named_parameters()]
    latent = poutine.trace(guide._sample_aux_values).get_trace(temperature=1.0)
    latent = latent.nodes["_AutoGaussianSparse_latent"]["fn"]
    flat = latent.rsample((2,))
    fast = latent.log_prob(flat)
    slow = latent.log_prob(flat.clone())  # not the cached draw: recomputed
    torch.testing.assert_close(fast, slow)
    for a, b in zip(_grads(fast, params), _grads(slow, params)):
        torch.testing.assert_close(a, b)


def _grads(x, params):
    grads = torch.autograd.grad(x.sum(), params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


@pytest.mark.parametrize("name", ["nested", "across"])
def test_funsor_agrees_with_dense(name):
    model, make_args = PLATED[name]
    args = make_args()
    guides = _guides(model, args, backends=("dense", "funsor"))
    dense, funsor = guides["dense"], guides["funsor"]
    mvn = dense._dense_layout.mvn(dense._factor_params)
    trace = poutine.trace(funsor._sample_aux_values).get_trace(temperature=1.0)
    aux = trace.nodes["_RETURN"]["value"]
    log_prob = trace.nodes["_AutoGaussianFunsor_latent"]["fn"].log_factor
    flat = dense._dense_layout.flatten(aux)
    torch.testing.assert_close(log_prob, mvn.log_prob(flat), rtol=1e-4, atol=1e-4)
    a, b = funsor.median(*args), dense.median(*args)
    for site in b:
        torch.testing.assert_close(a[site], b[site], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["funsor", "sparse"])
def test_crossed_plates_are_refused_with_the_fix(backend):
    y = _data((2, 3))
    AutoGaussian(crossed_model, backend="dense")(y)  # dense handles anything
    with pytest.raises(NotImplementedError, match="backend='dense'") as info:
        AutoGaussian(crossed_model, backend=backend)(y)
    if backend == "sparse":
        assert "'x' (plates {'i'})" in str(info.value)
        assert "'w' (plates {'j'})" in str(info.value)


@pytest.mark.parametrize("backend", ["funsor", "sparse"])
def test_dependence_outside_the_plates_is_refused(backend):
    y = torch.tensor(0.5)
    AutoGaussian(outside_model, backend="dense")(y)
    with pytest.raises(NotImplementedError, match=r"'t' depends on 'x'.*\{'i'\}"):
        AutoGaussian(outside_model, backend=backend)(y)


def test_sparse_scales_linearly_with_the_plate():
    """A million local latents: dense would need a 10^12-entry matrix."""

    def model(y):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("groups", y.shape[0]):
            theta = pyro.sample("theta", dist.Normal(loc, scale))
            pyro.sample("y", dist.Normal(theta, 1.0), obs=y)

    y = torch.zeros(1_000_000)
    guide = AutoGaussian(model, backend="sparse")
    loss = pyro.infer.Trace_ELBO().differentiable_loss(model, guide, y)
    loss.backward()
    solution = guide._solve()
    assert max(t.numel() for t in solution.chol.values()) == 1_000_000
    assert guide.median(y)["theta"].shape == (1_000_000,)


def _linear_gaussian(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    with pyro.plate("groups", 3):
        theta = pyro.sample("theta", dist.Normal(mu, 1.0))
        pyro.sample("y", dist.Normal(theta, 0.5), obs=y)


def _linear_gaussian_unplated(y):
    """The same posterior without plates: one group, drawn as dense draws."""
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    loc = mu.unsqueeze(-1).expand(mu.shape + (3,))
    theta = pyro.sample("theta", dist.Normal(loc, 1.0).to_event(1))
    pyro.sample("y", dist.Normal(theta, 0.5).to_event(1), obs=y)


def test_without_plates_the_draw_is_denses():
    y = torch.tensor([1.0, -0.5, 2.0])
    guides = _guides(_linear_gaussian_unplated, (y,))
    traces = {}
    for backend, guide in guides.items():
        pyro.set_rng_seed(5)
        traces[backend] = poutine.trace(guide).get_trace(y)
    dense, sparse = traces["dense"], traces["sparse"]
    for site in ("mu", "theta"):
        torch.testing.assert_close(
            sparse.nodes[site]["value"], dense.nodes[site]["value"]
        )
    assert sparse.log_prob_sum().item() == pytest.approx(dense.log_prob_sum().item())
    # the block Cholesky's density, as a function of the params, value and gradient
    guide = guides["sparse"]
    params = [p for _, p in sorted(guide.named_parameters())]
    z = sparse.nodes["_AutoGaussianSparse_latent"]["value"].detach()
    fast = guide._dense_layout.mvn(guide._factor_params).log_prob(z)
    block = SparseGaussian(guide._solve()).log_prob(z)
    torch.testing.assert_close(fast, block)
    grads = [torch.autograd.grad(lp, params, allow_unused=True) for lp in (fast, block)]
    assert any(g is not None for g in grads[0])
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)


def _exact_posterior(y):
    """Posterior mean and covariance of (mu, theta) by dense linear algebra."""
    n = y.numel()
    precision = torch.zeros(n + 1, n + 1)
    precision[0, 0] = 1 / 4 + n
    precision[0, 1:] = precision[1:, 0] = -1.0
    precision[1:, 1:] = torch.eye(n) * (1 + 4)
    info = torch.cat([torch.zeros(1), 4 * y])
    cov = torch.linalg.inv(precision)
    return cov @ info, cov


@pytest.mark.slow
@pytest.mark.parametrize("model", [_linear_gaussian, _linear_gaussian_unplated])
@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_fitted_guide_recovers_the_exact_linear_gaussian_posterior(backend, model):
    y = torch.tensor([1.0, -0.5, 2.0])
    mean, cov = _exact_posterior(y)
    guide = AutoGaussian(model, backend=backend)
    optim = pyro.optim.ClippedAdam({"lr": 0.02, "lrd": 0.999})
    elbo = pyro.infer.Trace_ELBO(num_particles=16, vectorize_particles=True)
    svi = pyro.infer.SVI(model, guide, optim, elbo)
    for _ in range(3000):
        svi.step(y)
    with torch.no_grad():
        draws = pyro.infer.Predictive(
            model,
            guide=guide,
            num_samples=20000,
            return_sites=["mu", "theta"],
        )(y)
    flat = torch.cat([draws["mu"].reshape(-1, 1), draws["theta"].reshape(-1, 3)], -1)
    torch.testing.assert_close(flat.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(flat.T), cov, atol=0.05, rtol=0)
