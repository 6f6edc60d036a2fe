"""Posterior draws, their summary table and the ArviZ export."""

from __future__ import annotations

import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import guide_core.core.draws
from guide_core import (
    AutoDelta,
    AutoGuideList,
    AutoNormal,
    AutoNormalMessenger,
    MissingExtraError,
    Summary,
    sample_posterior,
    summary,
    to_inference_data,
)
from guide_core.core.draws import default_model
from guide_core.workflow.draws.posterior import _quantiles

Y = torch.tensor([[0.5, 1.0, 1.5, 0.2], [1.1, 0.3, 0.9, 1.4], [0.0, 0.8, 1.2, 0.6]])


def model(y):
    """A plated model with a constrained site and a deterministic one."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("group", 4):
        theta = pyro.sample("theta", dist.Normal(mu, 1.0))
        pyro.deterministic("effect", 2.0 * theta + mu)
        with pyro.plate("rep", 3, dim=-2):
            pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def _trained(make, steps=5):
    guide = make(model)
    svi = pyro.infer.SVI(
        model, guide, pyro.optim.Adam({"lr": 0.05}), pyro.infer.Trace_ELBO()
    )
    for _ in range(steps):
        svi.step(Y)
    return guide


def _shapes(samples):
    return {name: tuple(value.shape) for name, value in samples.items()}


EXPECTED = {"mu": (300,), "sigma": (300,), "theta": (300, 4), "effect": (300, 4)}


@pytest.mark.parametrize("make", [AutoNormal, AutoDelta, AutoNormalMessenger])
def test_latent_and_deterministic_sites_with_draws_first(make):
    guide = _trained(make)
    samples = sample_posterior(guide, Y, num_samples=300)
    assert _shapes(samples) == EXPECTED  # observed 'y' is not a posterior site
    assert bool((samples["sigma"] > 0).all())
    torch.testing.assert_close(
        samples["effect"], 2.0 * samples["theta"] + samples["mu"][:, None]
    )
    varies = bool((samples["theta"].std(0) > 0).all())
    assert varies == (make is not AutoDelta)


def test_a_guide_that_was_never_called_is_set_up_first():
    samples = sample_posterior(AutoNormal(model), Y, num_samples=300)
    assert _shapes(samples) == EXPECTED


def test_the_method_on_every_guide_calls_the_function():
    for make in (AutoNormal, AutoNormalMessenger):
        guide = _trained(make)
        pyro.set_rng_seed(3)
        by_method = guide.sample_posterior(Y, num_samples=50)
        pyro.set_rng_seed(3)
        by_function = sample_posterior(guide, Y, num_samples=50)
        assert _shapes(by_method) == _shapes(by_function)
        for name in by_method:
            torch.testing.assert_close(by_method[name], by_function[name])


def test_guide_list():
    guide = AutoGuideList(model)
    guide.append(AutoNormal(poutine.block(model, expose=["mu", "theta"])))
    guide.append(AutoDelta(poutine.block(model, expose=["sigma"])))
    samples = guide.sample_posterior(Y, num_samples=300)
    assert _shapes(samples) == EXPECTED
    assert float(samples["sigma"].std()) < 1e-5 < float(samples["mu"].std())


def test_draws_follow_the_guide():
    guide = _trained(AutoNormal, steps=1)
    samples = sample_posterior(guide, Y, num_samples=4000)
    loc, scale = guide.locs.theta.detach(), guide.scales.theta.detach()
    torch.testing.assert_close(samples["theta"].mean(0), loc, atol=0.02, rtol=0)
    torch.testing.assert_close(samples["theta"].std(0), scale, atol=0.02, rtol=0)


def unvectorizable(y):
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    if a > 0:  # Python control flow on a latent
        b = pyro.sample("b", dist.Normal(a, 1.0))
    else:
        b = pyro.sample("b", dist.Normal(-a, 1.0))
    pyro.deterministic("total", a + b)
    pyro.sample("y", dist.Normal(b, 1.0), obs=y)


def test_models_that_do_not_vectorize_are_drawn_one_by_one(monkeypatch):
    calls = []
    one_by_one = guide_core.core.draws._one_by_one
    monkeypatch.setattr(
        guide_core.core.draws,
        "_one_by_one",
        lambda *a, **k: calls.append(1) or one_by_one(*a, **k),
    )
    guide = AutoNormal(unvectorizable)
    samples = sample_posterior(guide, torch.tensor(1.0), num_samples=40)
    assert calls and _shapes(samples) == {"a": (40,), "b": (40,), "total": (40,)}
    torch.testing.assert_close(samples["total"], samples["a"] + samples["b"])
    assert float(samples["a"].std()) > 0.01
    calls.clear()
    sample_posterior(AutoNormal(model), Y, num_samples=40)
    assert not calls  # a vectorizable model is drawn in one go


def summed(y):
    """Vectorizes without error but wrongly: the sum mixes the draws."""
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    pyro.deterministic("wrong", a.sum())
    pyro.sample("y", dist.Normal(a, 1.0), obs=y)


def test_a_deterministic_site_that_mixes_draws_is_caught():
    samples = sample_posterior(AutoNormal(summed), torch.tensor(0.3), num_samples=50)
    torch.testing.assert_close(samples["wrong"], samples["a"])


def test_sites_the_guide_does_not_cover_are_drawn_from_the_model():
    def two(y):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(a, 1.0))
        pyro.sample("y", dist.Normal(a, 1.0), obs=y)

    guide = AutoNormal(poutine.block(two, hide=["b"]))
    samples = sample_posterior(guide, torch.tensor(0.5), num_samples=500, model=two)
    assert set(samples) == {"a", "b"}
    assert 0.8 < float((samples["b"] - samples["a"]).std()) < 1.2


def test_default_model_drops_the_init_handler():
    guide = AutoNormal(model)
    assert default_model(guide) is model
    assert default_model(AutoNormalMessenger(model)) is model


def test_plain_guides_need_the_model():
    def guide(y):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(TypeError, match="pass the model explicitly: model=my_model"):
        sample_posterior(guide, Y, num_samples=10)

    def small(y):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    samples = sample_posterior(guide, Y, num_samples=10, model=small)
    assert _shapes(samples) == {"mu": (10,)}


def test_sample_posterior_checks_its_arguments():
    guide = AutoNormal(model)
    with pytest.raises(ValueError, match="'num_samples' must be >= 1: 0"):
        sample_posterior(guide, Y, num_samples=0)
    with pytest.raises(TypeError, match="'num_samples' must be an int"):
        sample_posterior(guide, Y, num_samples=2.5)
    with pytest.raises(TypeError, match="'guide' must be a guide"):
        sample_posterior("not a guide", Y)


def test_quantiles_match_torch():
    x = torch.randn(101, 3, 2, dtype=torch.float64)
    levels = torch.tensor([0.0, 0.05, 0.5, 0.95, 1.0], dtype=torch.float64)
    torch.testing.assert_close(_quantiles(x, levels), torch.quantile(x, levels, dim=0))


def test_summary_of_samples():
    samples = {"a": torch.arange(11.0), "b": torch.arange(22.0).reshape(11, 2)}
    s = summary(samples, quantiles=[0.1, 0.5])
    assert isinstance(s, Summary) and list(s) == ["a", "b"] and len(s) == 2
    assert s.levels == (0.1, 0.5) and s.num_samples == 11
    assert float(s["a"].mean) == 5.0
    torch.testing.assert_close(s["a"].sd, torch.arange(11.0, dtype=torch.float64).std())
    torch.testing.assert_close(
        s["a"].quantiles, torch.tensor([1.0, 5.0], dtype=torch.float64)
    )
    assert s["b"].quantiles.shape == (2, 2)
    with pytest.raises(KeyError, match="no site 'c' in the summary; sites: a, b"):
        s["c"]


def test_summary_of_a_guide_and_its_table():
    guide = _trained(AutoNormal)
    s = summary(guide, Y, num_samples=200)
    assert list(s) == ["mu", "sigma", "theta", "effect"]
    assert s.levels == (0.05, 0.5, 0.95) and s.num_samples == 200
    table = s.table()
    lines = table.splitlines()
    assert lines[0].split() == ["site", "mean", "sd", "5%", "50%", "95%"]
    rows = [line.split()[0] for line in lines[2:]]
    assert rows == ["mu", "sigma"] + [f"theta[{i}]" for i in range(4)] + [
        f"effect[{i}]" for i in range(4)
    ]
    assert str(s) == table


def test_table_truncates_big_sites():
    s = summary({"big": torch.randn(20, 3, 10), "one": torch.randn(20)})
    lines = s.table(max_elements=4).splitlines()
    assert [line.split()[0] for line in lines[2:6]] == [
        "big[0,0]",
        "big[0,1]",
        "big[0,2]",
        "big[0,3]",
    ]
    assert lines[6] == "... 26 more elements of big"
    assert lines[7].split()[0] == "one"


def test_summary_checks_its_input():
    with pytest.raises(TypeError, match="pass either a guide and the model's"):
        summary({"a": torch.zeros(3)}, Y)
    with pytest.raises(ValueError, match=r"samples\['a'\] must be a tensor"):
        summary({"a": [1.0, 2.0]})
    with pytest.raises(TypeError, match="expected a guide or a dict"):
        summary(42)
    with pytest.raises(ValueError, match="quantile levels must lie in"):
        summary({"a": torch.zeros(3)}, quantiles=[0.5, 1.5])


def test_inference_data():
    arviz = pytest.importorskip("arviz")
    guide = _trained(AutoNormal)
    data = to_inference_data(guide, Y, num_samples=30)
    assert isinstance(data, arviz.InferenceData)
    posterior = data.posterior
    assert set(posterior.data_vars) == {"mu", "sigma", "theta", "effect"}
    assert posterior["theta"].shape == (1, 30, 4)
    from_dict = to_inference_data({"a": torch.zeros(7, 2)})
    assert from_dict.posterior["a"].shape == (1, 7, 2)


def test_inference_data_without_arviz(monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz", None)  # import arviz fails
    with pytest.raises(MissingExtraError, match=r"pip install 'guide-core\[arviz\]'"):
        to_inference_data({"a": torch.zeros(3)})
