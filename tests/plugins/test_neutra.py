"""NeuTraReparam for our AutoContinuous guides, against Pyro's and under NUTS."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.infer.autoguide as oracle
import pytest
import torch
from guide_plugins.neutra import NeuTraReparam
from pyro import poutine
from pyro.infer.mcmc import MCMC, NUTS
from pyro.infer.reparam import NeuTraReparam as PyroNeuTraReparam

import guide_core


def funnel():
    y = pyro.sample("y", dist.Normal(0.0, 3.0))
    with pyro.plate("p", 3):
        pyro.sample("x", dist.Normal(0.0, (y / 2).exp()))


def fit(cls, steps=30, **kwargs):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = cls(funnel, **kwargs)
    svi = pyro.infer.SVI(
        funnel, guide, pyro.optim.Adam({"lr": 0.02}), pyro.infer.Trace_ELBO()
    )
    for _ in range(steps):
        svi.step()
    return guide


def log_joint(model, z):
    conditioned = poutine.condition(model, data={"y_shared_latent": z})
    trace = poutine.trace(conditioned).get_trace()
    return trace.log_prob_sum(), trace


@pytest.mark.parametrize("name", ["AutoMultivariateNormal", "AutoIAFNormal"])
def test_density_and_samples_match_pyros_neutra(name):
    ours = fit(getattr(guide_core, name))
    theirs = fit(getattr(oracle, name))
    z = torch.tensor([0.3, -1.0, 0.5, 2.0])
    mine = NeuTraReparam(ours)
    expected = PyroNeuTraReparam(theirs)
    lp, trace = log_joint(mine.reparam(funnel), z)
    p_lp, p_trace = log_joint(poutine.reparam(funnel, config=lambda _: expected), z)
    torch.testing.assert_close(lp, p_lp)
    for site in ("y", "x"):
        torch.testing.assert_close(
            trace.nodes[site]["value"], p_trace.nodes[site]["value"]
        )
    batch = torch.randn(5, 1, 4)  # Pyro's convention: batch dims left of the plate
    for site, value in expected.transform_sample(batch).items():
        torch.testing.assert_close(mine.transform_sample(batch)[site], value)


def test_log_density_is_the_change_of_variables_of_the_model():
    guide = fit(guide_core.AutoLowRankMultivariateNormal, rank=2)  # Pyro's cannot
    neutra = NeuTraReparam(guide)
    z = torch.tensor([0.1, 0.2, -0.3, 0.4])
    lp, trace = log_joint(neutra.reparam(funnel), z)
    transform = guide.get_transform()
    values = {s: trace.nodes[s]["value"] for s in ("y", "x")}
    model_lp = poutine.trace(poutine.condition(funnel, data=values)).get_trace()
    # the shared latent's own density is masked out: HMC adds no base term
    expected = model_lp.log_prob_sum() + transform.log_abs_det_jacobian(z, transform(z))
    torch.testing.assert_close(lp, expected)


def test_nuts_runs_on_a_reparametrized_funnel():
    guide = fit(guide_core.AutoIAFNormal, steps=50, hidden_dim=[8])
    neutra = NeuTraReparam(guide)
    kernel = NUTS(neutra.reparam(funnel), max_tree_depth=4)
    mcmc = MCMC(kernel, num_samples=15, warmup_steps=15, disable_progbar=True)
    mcmc.run()
    latent = mcmc.get_samples()["y_shared_latent"]
    assert latent.shape == (15, 4) and torch.isfinite(latent).all()
    samples = neutra.transform_sample(latent)
    assert samples["y"].shape == (15,) and samples["x"].shape == (15, 3)
    assert torch.isfinite(samples["x"]).all()


def test_bad_guides_are_errors():
    with pytest.raises(TypeError, match="needs an AutoContinuous guide of guide_core"):
        NeuTraReparam(guide_core.AutoNormal(funnel))
    with pytest.raises(RuntimeError, match="has not been called yet"):
        poutine.trace(
            NeuTraReparam(guide_core.AutoDiagonalNormal(funnel)).reparam(funnel)
        ).get_trace()
    laplace = fit(guide_core.AutoLaplaceApproximation, steps=2)
    with pytest.raises(ValueError, match="get_base_dist\\(\\) and a get_transform"):
        poutine.trace(NeuTraReparam(laplace).reparam(funnel)).get_trace()


# -- the HMC target: which log-det, counted how often ----------------------------


def correlated():
    """One site with event shape (2,), like the banana of Pyro's NeuTra example."""
    cov = torch.tensor([[1.0, 0.8], [0.8, 2.0]])
    pyro.sample("x", dist.MultivariateNormal(torch.tensor([1.0, -2.0]), cov))


def plated():
    """The first site is batched (a plate of 2) and constrained."""
    with pyro.plate("p", 2):
        s = pyro.sample("s", dist.LogNormal(0.0, 0.5))
    pyro.sample("m", dist.Normal(0.0, s).to_event(1))


class ElementwiseDiagonalNormal(guide_core.AutoDiagonalNormal):
    """Pyro's choice of transform: an elementwise affine map (``event_dim=0``)."""

    def get_transform(self, *args, **kwargs):
        return dist.transforms.AffineTransform(self.loc, self.scale)


GUIDES = {
    "diagonal": guide_core.AutoDiagonalNormal,
    "elementwise": ElementwiseDiagonalNormal,
    "iaf": guide_core.AutoIAFNormal,
}
TARGETS = {"correlated": correlated, "plated": plated, "funnel": funnel}


def fit_to(cls, model, steps=30):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = cls(model)
    svi = pyro.infer.SVI(
        model, guide, pyro.optim.Adam({"lr": 0.05}), pyro.infer.Trace_ELBO()
    )
    for _ in range(steps):
        svi.step()
    return guide.requires_grad_(False)


def change_of_variables(model, guide, z):
    """``log p(T(z)) + log |det dT/dz|``, T the guide's transform then each
    site's bijection: the density HMC must target in the shared latent's space."""
    transform = guide.get_transform()
    x = transform(z)
    log_det = transform.log_abs_det_jacobian(z, x).sum()
    values = {}
    for site, u in guide._unpack_latent(x):  # ours and Pyro's have it
        bijection = torch.distributions.biject_to(site["fn"].support)
        value = values[site["name"]] = bijection(u)
        log_det = log_det + bijection.log_abs_det_jacobian(u, value).sum()
    trace = poutine.trace(poutine.condition(model, data=values)).get_trace()
    return trace.log_prob_sum() + log_det


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("kind", sorted(GUIDES))
def test_reparametrized_density_is_the_change_of_variables(kind, target):
    model = TARGETS[target]
    guide = fit_to(GUIDES[kind], model)
    neutra = NeuTraReparam(guide)
    reparametrized = neutra.reparam(model)
    first = next(iter(guide._layout.names))  # the shared latent is named after it
    torch.manual_seed(1)
    for _ in range(3):
        z = torch.randn(guide.latent_dim)
        conditioned = poutine.condition(
            reparametrized, data={f"{first}_shared_latent": z}
        )
        lp = poutine.trace(conditioned).get_trace().log_prob_sum()
        torch.testing.assert_close(lp, change_of_variables(model, guide, z))


def test_pyros_elementwise_transform_counts_an_event_site_once_per_coordinate():
    # Evidence for keeping event_dim=1: Pyro's AutoDiagonalNormal (elementwise
    # log-det, shape (D,)) under Pyro's NeuTraReparam broadcasts the first
    # site's scalar log-prob against it, so a site with event shape (D,) is
    # counted D times: HMC targets p(x)**D, not p(x).
    guide = fit_to(oracle.AutoDiagonalNormal, correlated)
    neutra = PyroNeuTraReparam(guide)
    z = torch.tensor([0.3, -0.7])
    reparametrized = poutine.reparam(correlated, config=lambda _: neutra)
    conditioned = poutine.condition(reparametrized, data={"x_shared_latent": z})
    lp = poutine.trace(conditioned).get_trace().log_prob_sum()
    x = guide.get_transform()(z)
    cov = torch.tensor([[1.0, 0.8], [0.8, 2.0]])
    log_p = dist.MultivariateNormal(torch.tensor([1.0, -2.0]), cov).log_prob(x)
    exact = change_of_variables(correlated, guide, z)
    torch.testing.assert_close(lp, exact + (2 - 1) * log_p)


@pytest.mark.slow  # ~35 s each: HMC draws through NeuTra, compared with p(x)
@pytest.mark.parametrize("kind", ["diagonal", "elementwise", "pyro"])
def test_neutra_hmc_samples_the_known_posterior(kind):
    from pyro.infer.mcmc import HMC
    from pyro.ops.stats import effective_sample_size

    if kind == "pyro":  # Pyro's guide and reparametrizer: it targets p(x)**2
        guide = fit_to(oracle.AutoDiagonalNormal, correlated, steps=300)
        neutra = PyroNeuTraReparam(guide)
        reparametrized = poutine.reparam(correlated, config=lambda _: neutra)
        power = 2.0
    else:
        guide = fit_to(GUIDES[kind], correlated, steps=300)
        neutra = NeuTraReparam(guide)
        reparametrized = neutra.reparam(correlated)
        power = 1.0
    pyro.set_rng_seed(1)
    kernel = HMC(reparametrized, step_size=0.5, num_steps=4)
    mcmc = MCMC(kernel, num_samples=500, warmup_steps=100, disable_progbar=True)
    mcmc.run()
    x = neutra.transform_sample(mcmc.get_samples()["x_shared_latent"])["x"]
    # p(x)**power is the normal with the same mean and covariance / power
    mean = torch.tensor([1.0, -2.0])
    var = torch.tensor([1.0, 2.0]) / power
    ess = effective_sample_size(x.unsqueeze(0)).clamp(max=len(x))
    mean_err = (x.mean(0) - mean).abs() / (var / ess).sqrt()
    var_err = (x.var(0) - var).abs() / (var * (2 / ess).sqrt())
    assert (mean_err < 4).all(), (x.mean(0), ess)
    assert (var_err < 4).all(), (x.var(0), ess)
