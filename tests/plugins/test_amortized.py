"""The amortized family on a linear-Gaussian latent model, whose per-row
posterior is known exactly: y_i = W z_i + noise, z_i ~ N(0, I), W with
orthogonal columns, so the posterior of z_i is Gaussian with a diagonal
covariance, a mean linear in y_i and the same covariance for every row."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import guide_core
from guide_core import registry

LATENT, OBSERVED, SIGMA = 2, 5, 0.5
_Q, _ = torch.linalg.qr(
    torch.randn(OBSERVED, LATENT, generator=torch.Generator().manual_seed(3))
)
W = _Q * torch.tensor([2.0, 1.0])  # orthogonal columns: W^T W is diagonal


def data(rows: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, LATENT, generator=g)
    return z @ W.T + SIGMA * torch.randn(rows, OBSERVED, generator=g)


Y, HELD_OUT = data(400, 0), data(100, 1)


def exact(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The posterior mean of each row and the (shared) posterior sds."""
    precision = torch.eye(LATENT) + W.T @ W / SIGMA**2
    cov = torch.linalg.inv(precision)
    return y @ (cov @ W.T / SIGMA**2).T, cov.diagonal().sqrt()


def model(y, batch=None):
    rows = y.shape[0]
    with pyro.plate("data", rows if batch is None else batch, subsample_size=rows):
        z = pyro.sample("z", dist.Normal(torch.zeros(LATENT), 1.0).to_event(1))
        pyro.sample("y", dist.Normal(z @ W.T.to(z), SIGMA).to_event(1), obs=y)


def subsampled_model(y):
    with pyro.plate("data", y.shape[0], subsample_size=100) as idx:
        z = pyro.sample("z", dist.Normal(torch.zeros(LATENT), 1.0).to_event(1))
        pyro.sample("y", dist.Normal(z @ W.T, SIGMA).to_event(1), obs=y[idx])


def linear(site: str, inputs: int, outputs: int) -> nn.Module:
    return nn.Linear(inputs, outputs)


STEPS = 3000


def _optim(steps: int = STEPS) -> pyro.optim.PyroOptim:
    """Adam from 0.03 down to 1e-4: the last steps jitter far less than MC error."""
    return pyro.optim.ClippedAdam({"lr": 0.03, "lrd": 0.003 ** (1 / steps)})


def _fit(guide, model_fn, batches, steps: int = STEPS, **kwargs) -> guide_core.SVI:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = guide_core.SVI(
        model_fn, guide, _optim(steps), TraceMeanField_ELBO(), **kwargs
    )
    for step in range(steps):
        svi.step(*batches(step))
    return svi


def _check_exact(loc: torch.Tensor, sd: torch.Tensor, y: torch.Tensor) -> None:
    want_loc, want_sd = exact(y)
    # within a tenth of a posterior sd for every row, and 10% on the sds
    assert float(((loc - want_loc).abs() / want_sd).max()) < 0.1
    torch.testing.assert_close(sd, want_sd.expand_as(sd), rtol=0.05, atol=0.0)


def _unconstrained(guide, y):
    """Each row's posterior mean and sd (z's support is real: no transform)."""
    q = guide.quantiles([0.15865525393145707, 0.8413447460685429], y)["z"]
    return guide.median(y)["z"], (q[1] - q[0]) / 2


def test_a_linear_encoder_is_exact_on_training_and_held_out_rows():
    guide = registry.make(
        "auto_amortized_normal",
        model,
        amortized_plates="data",
        encoder_input="y",
        encoder=linear,
    )
    svi = _fit(guide, model, lambda _: (Y,))
    assert svi.engine == "recorded", svi.reason
    _check_exact(*_unconstrained(guide, Y), Y)
    _check_exact(*_unconstrained(guide, HELD_OUT), HELD_OUT)  # never trained on
    # and the same through Predictive on the new rows, without refitting
    _check_predicted(guide)
    drawn = guide_core.sample_posterior(guide, HELD_OUT, num_samples=4000)["z"]
    want_loc, want_sd = exact(HELD_OUT)
    assert float(((drawn.mean(0) - want_loc).abs() / want_sd).max()) < 0.15


def _check_predicted(guide) -> None:
    """Predictive's draws of the held-out rows against their exact posterior."""
    draws = Predictive(model, guide=guide, num_samples=4000, return_sites=["z"])(
        HELD_OUT
    )["z"]
    want_loc, want_sd = exact(HELD_OUT)
    # 4,000 draws: the mean's MC error is 0.016 sd
    assert float(((draws.mean(0) - want_loc).abs() / want_sd).max()) < 0.15
    torch.testing.assert_close(draws.std(0).mean(0), want_sd, rtol=0.05, atol=0.0)


def test_its_elbo_is_autonormals():
    def elbo(guide) -> float:
        loss = Trace_ELBO(num_particles=200, vectorize_particles=True)
        return -float(loss.loss(model, guide, Y)) / len(Y)

    amortized = guide_core.AutoAmortizedNormal(
        model, amortized_plates="data", encoder_input="y", encoder=linear
    )
    _fit(amortized, model, lambda _: (Y,))
    ours = elbo(amortized)
    normal = guide_core.AutoNormal(model)
    _fit(normal, model, lambda _: (Y,))
    assert ours == pytest.approx(elbo(normal), abs=0.02)


def test_a_subsampled_plate_gives_the_full_batch_posterior():
    guide = guide_core.AutoAmortizedNormal(
        subsampled_model, amortized_plates="data", encoder_input="y", encoder=linear
    )
    _fit(guide, subsampled_model, lambda _: (Y,))
    _check_exact(*_unconstrained(_on_all_rows(guide), Y), Y)


def _on_all_rows(trained):
    """The trained state in a guide of the model on all rows at once (a
    subsampled guide draws a subsample): the state does not depend on N."""
    full = guide_core.AutoAmortizedNormal(
        model, amortized_plates="data", encoder_input="y", encoder=linear
    )
    full.load_state_dict(trained.state_dict())
    return full


def test_dataloader_mini_batches_through_guide_core_svi():
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(Y), batch_size=100, shuffle=True)
    batches = [(b, len(Y)) for _ in range(STEPS // 4) for (b,) in loader]
    guide = guide_core.AutoAmortizedNormal(
        model, amortized_plates="data", encoder_input="y", encoder=linear
    )
    svi = _fit(guide, model, batches.__getitem__, len(batches), engine="recorded")
    assert svi.engine == "recorded", svi.reason
    _check_exact(*_unconstrained(_on_all_rows(guide), Y), Y)


def test_the_recorded_engine_gives_pyros_losses():
    def losses(svi_class):
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        guide = guide_core.AutoAmortizedNormal(
            model, amortized_plates="data", encoder_input="y", hidden=(8,)
        )
        kwargs = {"engine": "recorded"} if svi_class is guide_core.SVI else {}
        optim = pyro.optim.Adam({"lr": 0.01})
        svi = svi_class(model, guide, optim, Trace_ELBO(), **kwargs)
        return [svi.step(Y) for _ in range(20)], svi

    want, _ = losses(SVI)
    got, svi = losses(guide_core.SVI)
    assert svi.engine == "recorded", svi.reason
    assert got == pytest.approx(want, rel=1e-5)


def test_save_load_then_predictive_on_new_rows_gives_equal_draws(tmp_path):
    guide = guide_core.AutoAmortizedNormal(
        model, amortized_plates="data", encoder_input="y", hidden=(8,)
    )
    _fit(guide, model, lambda _: (Y,), 30)
    path = tmp_path / "guide.pt"
    guide_core.save(guide, path)

    def draws(g):
        pyro.set_rng_seed(7)
        return Predictive(model, guide=g, num_samples=5)(HELD_OUT)["z"]

    want = draws(guide)
    pyro.clear_param_store()
    loaded = guide_core.load(path, model, model_args=(Y,))  # set up as trained
    torch.testing.assert_close(draws(loaded), want, rtol=0, atol=0)


def test_median_quantiles_and_float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        y = Y.double()
        guide = guide_core.AutoAmortizedNormal(
            model, amortized_plates="data", encoder_input="y"
        )
        _fit(guide, model, lambda _: (y,), 3)
        median = guide.median(y)["z"]
        assert median.shape == (len(y), LATENT) and median.dtype == torch.float64
        q = guide.quantiles([0.1, 0.5, 0.9], y)["z"]
        assert q.shape == (3, len(y), LATENT)
        torch.testing.assert_close(q[1], median)
        assert bool((q[0] < q[2]).all())
    finally:
        torch.set_default_dtype(old)


def test_the_messenger_is_exact_too_and_overridable():
    guide = guide_core.AutoAmortizedNormalMessenger(
        model, amortized_plates="data", encoder_input="y", encoder=linear
    )
    _fit(guide, model, lambda _: (Y,))
    pyro.set_rng_seed(0)
    _check_predicted(guide)
    want_loc, want_sd = exact(HELD_OUT)
    median = guide.median(HELD_OUT)["z"]
    assert float(((median - want_loc).abs() / want_sd).max()) < 0.1

    class Shifted(guide_core.AutoAmortizedNormalMessenger):
        def get_posterior(self, name, prior):
            return (
                torch.zeros(LATENT)
                if name == "z"
                else super().get_posterior(name, prior)
            )

    shifted = Shifted(model, amortized_plates="data", encoder_input="y")
    assert float(shifted(HELD_OUT)["z"].abs().sum()) == 0.0


def test_encoder_learning_rates_by_name():
    from guide_plugins.amortized import optim_args_by_name

    guide = guide_core.AutoAmortizedNormal(
        model, amortized_plates="data", encoder_input="y", hidden=(4,)
    )
    optim = pyro.optim.Adam(
        optim_args_by_name({"encoders.": {"lr": 1e-3}}, {"lr": 0.1})
    )
    pyro.clear_param_store()
    svi = guide_core.SVI(model, guide, optim, Trace_ELBO(), engine="recorded")
    for _ in range(3):
        svi.step(Y)
    store = pyro.get_param_store()
    rates = {
        name: optim.optim_objs[store._params[name]].param_groups[0]["lr"]
        for name in store.keys()
    }
    assert rates and all(
        lr == (1e-3 if ".encoders." in name else 0.1) for name, lr in rates.items()
    )


def test_errors_name_the_plate_or_site():
    with pytest.raises(ValueError, match="amortized plate 'rows' is not a plate"):
        guide_core.AutoAmortizedNormal(
            model, amortized_plates="rows", encoder_input="y"
        )(Y)
    short = Y[:7]
    with pytest.raises(ValueError, match="encoder input of plate 'data' has 7 rows"):
        guide_core.AutoAmortizedNormal(
            model, amortized_plates="data", encoder_input=lambda y, batch=None: short
        )(Y)

    def discrete(y):
        with pyro.plate("data", len(y)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("y", dist.Normal(c, 1.0).expand([OBSERVED]).to_event(1), obs=y)

    with pytest.raises(ValueError, match="discrete sample site 'c'.*Enumerate it"):
        guide_core.AutoAmortizedNormal(
            discrete, amortized_plates="data", encoder_input="y"
        )(Y)
    with pytest.raises(ValueError, match="'amortized_plates' must name the plates"):
        guide_core.AutoAmortizedNormal(model, amortized_plates=(), encoder_input="y")


def with_a_global(y):
    shift = pyro.sample("shift", dist.Normal(0.0, 5.0))
    with pyro.plate("data", y.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(LATENT), 1.0).to_event(1))
        pyro.sample("y", dist.Normal(shift + z @ W.T, SIGMA).to_event(1), obs=y)


def test_from_the_model_alone_globals_stay_mean_field():
    guide = registry.make("auto_amortized_normal", with_a_global, hidden=(4,))
    pyro.clear_param_store()
    guide(Y)
    assert guide.amortized_plates == ("data",)  # latent and observed sites
    shapes = {n: tuple(p.shape) for n, p in pyro.get_param_store().named_parameters()}
    assert shapes["AutoAmortizedNormal.locs.shift"] == ()
    assert shapes["AutoAmortizedNormal.scales.shift"] == ()
    assert shapes["AutoAmortizedNormal.encoders.z.net.0.weight"] == (4, OBSERVED)
    assert not any(len(Y) in s for s in shapes.values())  # nothing per row

    # the messenger refuses a discrete site in its plate, naming both
    def discrete(y):
        with pyro.plate("data", len(y)):
            pyro.sample("c", dist.Bernoulli(0.5))

    messenger = guide_core.AutoAmortizedNormalMessenger(
        discrete, amortized_plates="data", encoder_input=0
    )
    with pytest.raises(ValueError, match="site 'c' in amortized plate 'data' has a"):
        messenger(Y)
