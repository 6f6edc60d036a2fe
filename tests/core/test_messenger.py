"""The AutoMessenger protocol: effect-handler guides over the model."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoMessenger as PyroAutoMessenger
from pyro.poutine.runtime import get_plates
from toys import PointMessenger

from guide_core import AutoMessenger


def model(data):
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", 6, subsample_size=2) as idx:
        x = pyro.sample("x", dist.Normal(0.0, scale))
        pyro.sample("obs", dist.Normal(x, 1.0), obs=data[idx])


DATA = torch.arange(6.0)


def test_messenger_runs_under_svi_and_call_returns_a_sorted_tuple():
    guide = PointMessenger(model)
    svi = pyro.infer.SVI(
        model, guide, pyro.optim.Adam({"lr": 0.01}), pyro.infer.Trace_ELBO()
    )
    assert torch.isfinite(torch.tensor(svi.step(DATA)))
    values = guide.call(DATA)
    assert isinstance(values, tuple) and len(values) == 3  # scale, x, obs


def test_parameters_cover_the_full_subsampled_plate():
    guide = PointMessenger(model)
    guide(DATA)
    assert guide.x_loc.shape == (6,)


def test_amortized_plates_share_one_parameter():
    guide = PointMessenger(model, amortized_plates=("data",))
    guide(DATA)
    assert guide.x_loc.shape == ()


def test_amortized_plates_must_be_a_tuple_of_names():
    with pytest.raises(TypeError, match=r"\('data',\)"):
        PointMessenger(model, amortized_plates="data")


@pytest.mark.parametrize("amortized", [(), ("b",)])
@pytest.mark.parametrize("event_dim", [0, 1])
def test_adjust_plates_matches_pyro(amortized, event_dim):
    outcome = {}
    for cls in (AutoMessenger, PyroAutoMessenger):

        class Probe(cls):
            def get_posterior(self, name, prior, key=cls):
                value = prior.sample()
                outcome[key] = self._adjust_plates(value, prior.event_dim)
                return value

        def probe_model():
            with pyro.plate("a", 4, subsample_size=2, dim=-2):
                with pyro.plate("b", 3, dim=-1):
                    shape = (2, 3, 5)[: 2 + event_dim]
                    base = dist.Normal(torch.zeros(shape), 1.0).to_event(event_dim)
                    pyro.sample("z", base)

        guide = Probe(probe_model, amortized_plates=amortized)
        with pyro.plate("particles", 7, dim=-3):
            pyro.set_rng_seed(1)
            guide()
        assert not get_plates()
    ours, theirs = outcome[AutoMessenger], outcome[PyroAutoMessenger]
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs)


def test_median_gives_every_sample_site_at_the_posterior_median():
    guide = PointMessenger(model)
    median = guide.median(DATA)
    assert set(median) == {"scale", "x", "obs"}  # like Pyro: observed sites too
    assert torch.allclose(median["scale"], torch.tensor(1.0))  # exp(0)
    assert torch.equal(median["obs"], DATA[:2]) or median["obs"].shape == (2,)


def test_quantiles_give_latent_sites_only_with_levels_first():
    guide = PointMessenger(model)
    q = guide.quantiles([0.1, 0.5, 0.9], DATA)
    assert set(q) == {"scale", "x"}
    assert q["x"].shape[0] == 3
    expected = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor([0.1, 0.5, 0.9]))
    assert torch.allclose(q["scale"], expected.exp(), atol=1e-6)


def test_median_uses_a_subclass_override_of_get_posterior():
    class Custom(PointMessenger):
        def get_posterior(self, name, prior):
            if name == "scale":
                return dist.LogNormal(torch.tensor(1.0), 0.5)
            return super().get_posterior(name, prior)

    median = Custom(model).median(DATA)
    assert torch.allclose(median["scale"], torch.tensor(1.0).exp())
