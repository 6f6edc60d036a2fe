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
