"""``guide_core.SVI``: the drop-in for ``pyro.infer.SVI`` on the recorded
engine, checked step by step against Pyro's own ``SVI``."""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch.utils.data import DataLoader, TensorDataset
from toys import CONJUGATE_Y, conjugate_normal, conjugate_posterior

import guide_core
from guide_core import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoGaussian,
    AutoGuideList,
    AutoMultivariateNormal,
    AutoNormal,
)

N = 40


def regression(x, y=None, kl=1.0):
    """A linear regression with a KL weight on its coefficients."""
    with poutine.scale(scale=kl):
        coef = pyro.sample("coef", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        bias = pyro.sample("bias", dist.Normal(0.0, 5.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", N, subsample_size=x.shape[0]):
        pyro.sample("y", dist.Normal(bias + x @ coef, sigma), obs=y)


def _data(n: int = N, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = 1.5 + x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(n, generator=g)
    return x, y


def _guide_list(model):
    guide = AutoGuideList(model)
    guide.append(AutoDelta(poutine.block(model, expose=["bias"])))
    guide.append(AutoNormal(poutine.block(model, hide=["bias"])))
    return guide


GUIDES = {
    "AutoNormal": AutoNormal,
    "AutoMultivariateNormal": AutoMultivariateNormal,
    "AutoDelta": AutoDelta,
    "AutoGaussian": AutoGaussian,
    "AutoGuideList": _guide_list,
}


def _losses(svi_class, make_guide, batches, seed=0, **svi_kwargs):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = make_guide(regression)
    svi = svi_class(
        regression, guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO(), **svi_kwargs
    )
    return [svi.step(*batch) for batch in batches], svi


@pytest.mark.parametrize("name", list(GUIDES))
def test_the_same_losses_as_pyro_svi(name):
    x, y = _data()
    batches = [(x, y)] * 50
    want, _ = _losses(pyro.infer.SVI, GUIDES[name], batches)
    got, svi = _losses(guide_core.SVI, GUIDES[name], batches, engine="recorded")
    assert svi.engine == "recorded", svi.reason
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_a_dataloader_with_a_ragged_last_batch():
    x, y = _data()
    torch.manual_seed(1)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    batches = [tuple(b) for _ in range(3) for b in loader]  # 16, 16, 8 per epoch
    want, _ = _losses(pyro.infer.SVI, AutoNormal, batches)
    got, svi = _losses(guide_core.SVI, AutoNormal, batches, engine="recorded")
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)
    assert svi.engine == "recorded"
    assert len(svi._trainer.state.programs) == 2  # one per batch shape


def test_a_float_that_changes_every_step_replays_one_program():
    x, y = _data()
    batches = [(x, y, min(1.0, 0.1 + i / 20)) for i in range(40)]
    want, _ = _losses(pyro.infer.SVI, AutoDiagonalNormal, batches)
    got, svi = _losses(guide_core.SVI, AutoDiagonalNormal, batches, engine="recorded")
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)
    assert svi.engine == "recorded"
    assert len(svi._trainer.state.programs) == 1


FACTOR = {"value": 1.0}


def reads_a_global(x, y=None):
    coef = pyro.sample("coef", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(FACTOR["value"] * (x @ coef), 1.0), obs=y)


def test_a_model_that_reads_a_changing_global_is_caught_then_eager():
    x, y = _data()

    def run(svi_class, **kw):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        FACTOR["value"] = 1.0
        guide = AutoNormal(reads_a_global)
        svi = svi_class(
            reads_a_global, guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO(), **kw
        )
        losses = []
        for i in range(30):
            FACTOR["value"] = 1.0 if i < 10 else 3.0
            losses.append(svi.step(x, y))
        return losses, svi

    want, _ = run(pyro.infer.SVI)
    with pytest.warns(RuntimeWarning, match="differs from eager"):
        got, svi = run(guide_core.SVI, check_every=5, engine="recorded")
    assert svi.engine == "eager"
    # stale steps between the change (step 11) and the check (step 15) only
    assert got[:10] == pytest.approx(want[:10], rel=1e-4, abs=1e-4)
    assert all(math.isfinite(v) for v in got)


OPTIMS = {
    "adam": lambda: pyro.optim.Adam({"lr": 0.02}),
    "clipped_adam": lambda: pyro.optim.ClippedAdam({"lr": 0.02, "lrd": 0.99}),
}


@pytest.mark.parametrize("optim_name", list(OPTIMS))
def test_checkpoint_and_resume_equal_an_uninterrupted_run(tmp_path, optim_name):
    x, y = _data()
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    optim = OPTIMS[optim_name]()
    svi = guide_core.SVI(
        regression, AutoNormal(regression), optim, Trace_ELBO(), engine="recorded"
    )
    for _ in range(20):
        svi.step(x, y)
    pyro.get_param_store().save(tmp_path / "params.pt")
    optim.save(tmp_path / "optim.pt")
    rng = torch.get_rng_state()
    uninterrupted = [svi.step(x, y) for _ in range(20)]
    final = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    pyro.clear_param_store()
    pyro.get_param_store().load(tmp_path / "params.pt")
    optim = OPTIMS[optim_name]()
    optim.load(tmp_path / "optim.pt")
    guide = AutoNormal(regression)
    guide(x, y)  # its set-up draws from the prior: before the random state
    torch.set_rng_state(rng)
    svi = guide_core.SVI(regression, guide, optim, Trace_ELBO(), engine="recorded")
    resumed = [svi.step(x, y) for _ in range(20)]
    assert resumed == pytest.approx(uninterrupted, rel=1e-5, abs=1e-5)
    for name, value in pyro.get_param_store().items():
        assert torch.allclose(value, final[name], rtol=1e-5, atol=1e-6), name
    # the optimizer's state is the state of the update that ran
    state = optim.get_state()
    assert set(state) == set(final)
    steps = {float(s["state"][0]["step"]) for s in state.values()}
    assert steps == {40.0}
    if optim_name == "clipped_adam":  # the learning rate that ran, decayed
        lrs = [s["param_groups"][0]["lr"] for s in state.values()]
        assert lrs == pytest.approx([0.02 * 0.99**40] * len(lrs))


def test_the_conjugate_posterior_is_recovered():
    y = CONJUGATE_Y
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(conjugate_normal)
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.999})  # lr 0.05 -> 0.0025
    svi = guide_core.SVI(conjugate_normal, guide, optim, Trace_ELBO())
    for _ in range(3000):
        svi.step(y)
    assert svi.engine == "recorded"
    loc, scale = conjugate_posterior(y)
    assert float(guide.locs.mu) == pytest.approx(loc, abs=0.03)
    assert float(guide.scales.mu) == pytest.approx(scale, rel=0.1)


def test_it_is_a_drop_in():
    x, y = _data()
    pyro.clear_param_store()
    guide = AutoNormal(regression)
    optim, elbo = pyro.optim.Adam({"lr": 0.02}), Trace_ELBO()
    svi = guide_core.SVI(regression, guide, optim, elbo)
    assert isinstance(svi, pyro.infer.SVI)
    assert svi.model is regression and svi.guide is guide and svi.optim is optim
    assert math.isfinite(svi.step(x, y))
    assert math.isfinite(svi.evaluate_loss(x, y))


def test_what_cannot_be_recorded_runs_pyros_step():
    x, y = _data()
    pyro.clear_param_store()
    guide = AutoNormal(regression)
    optim = pyro.optim.Adam({"lr": 0.02})
    svi = guide_core.SVI(regression, guide, optim, Trace_ELBO(), engine="eager")
    svi.step(x, y)
    assert svi.engine == "eager" and svi.reason == "asked for"

    def loss(model, guide, *args, **kwargs):
        return Trace_ELBO().differentiable_loss(model, guide, *args, **kwargs)

    svi = guide_core.SVI(regression, guide, optim, loss)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "auto" says nothing
        svi.step(x, y)
    assert svi.engine == "eager" and "not a pyro.infer ELBO" in svi.reason
    with pytest.raises(ValueError, match="'compiled' is for guide_core.fit"):
        guide_core.SVI(regression, guide, optim, Trace_ELBO(), engine="compiled")


def test_a_non_finite_step_is_not_applied():
    def model(weight):
        s = pyro.sample("s", dist.Normal(0.0, 1.0))
        pyro.factor("f", -weight * s**2)

    pyro.clear_param_store()
    guide = AutoNormal(model)
    optim = pyro.optim.Adam({"lr": 0.02})
    svi = guide_core.SVI(model, guide, optim, Trace_ELBO(), engine="recorded")
    for _ in range(3):
        svi.step(torch.tensor(1.0))
    assert svi.engine == "recorded"
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    with pytest.warns(RuntimeWarning, match="was not applied") as caught:
        loss = svi.step(torch.tensor(math.inf))
        again = svi.step(torch.tensor(math.inf))
    assert not math.isfinite(loss) and not math.isfinite(again)
    assert len([w for w in caught if "not applied" in str(w.message)]) == 1
    for k, v in pyro.get_param_store().items():
        assert torch.equal(v, before[k])


def test_auto_records_after_pyros_first_steps():
    from guide_core.workflow.fitting.svi import RECORD_AFTER

    x, y = _data()
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = guide_core.SVI(
        regression, AutoNormal(regression), pyro.optim.Adam({"lr": 0.02}), Trace_ELBO()
    )
    svi.step(x, y)
    assert svi.engine == "eager" and "first" in svi.reason
    for _ in range(RECORD_AFTER + 5):
        svi.step(x, y)
    assert svi.engine == "recorded"
    assert len(svi._trainer.state.programs) == 1


def reads_a_value(x, y=None):
    coef = pyro.sample("coef", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    scale = 1.0 if float(coef.sum()) > 100 else 0.5  # a value read into Python
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ coef, scale), obs=y)


@pytest.mark.parametrize(
    "case, why",
    [
        ("jit", "JitTrace_ELBO is not recorded"),
        ("value", "reads a tensor's value into Python"),
    ],
)
def test_what_cannot_be_recorded_is_said_once_then_pyros_step(case, why):
    x, y = _data()
    model = reads_a_value if case == "value" else regression
    elbo = pyro.infer.JitTrace_ELBO() if case == "jit" else Trace_ELBO()
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        svi = guide_core.SVI(model, guide, pyro.optim.Adam({"lr": 0.02}), elbo,
                             engine="recorded")  # fmt: skip
        losses = [svi.step(x, y) for _ in range(6)]
    said = [str(w.message) for w in caught if why in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in caught]
    assert svi.engine == "eager" and why in svi.reason
    assert all(math.isfinite(v) for v in losses)
