"""``guide_core.ELBOModule``: Pyro's ``ELBOModule`` on the recorded engine,
in a torch loop and under PyTorch Lightning."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.nn import PyroModule
from toys import CONJUGATE_Y, conjugate_normal, conjugate_posterior

import guide_core
from guide_core import AutoMultivariateNormal, AutoNormal

SIZE = 200


class Model(PyroModule):
    """Pyro's ``examples/svi_lightning.py`` model: a regression in mini-batches."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, covariates, data=None):
        coeff = pyro.sample("coeff", dist.Normal(0, 1))
        bias = pyro.sample("bias", dist.Normal(0, 1))
        scale = pyro.sample("scale", dist.LogNormal(0, 1))
        with pyro.plate("data", self.size, len(covariates)):
            loc = bias + coeff * covariates
            return pyro.sample("obs", dist.Normal(loc, scale), obs=data)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SIZE, generator=g)
    return x, 0.5 + 2.0 * x + 0.3 * torch.randn(SIZE, generator=g)


def _loop(make_loss, guide_class, steps=40, accumulate=1, module_local=False):
    """A torch loop: Adam over the loss module's parameters, clipping."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x, y = _data()
    with pyro.settings.context(module_local_params=module_local):
        model = Model(SIZE)
        guide = guide_class(model)
        loss_fn = make_loss(model, guide)
        loss_fn(x[:50], y[:50])  # the params exist before the optimizer
        optim = torch.optim.Adam(loss_fn.parameters(), lr=0.02)
        losses = []
        for step in range(steps):
            batch = slice(50 * (step % 4), 50 * (step % 4 + 1))
            loss = loss_fn(x[batch], y[batch]) / accumulate
            loss.backward()
            losses.append(float(loss))
            if (step + 1) % accumulate == 0:
                torch.nn.utils.clip_grad_norm_(loss_fn.parameters(), 10.0)
                optim.step()
                optim.zero_grad()
    return losses, loss_fn


def _ours(model, guide):
    return guide_core.ELBOModule(model, guide, Trace_ELBO(), engine="recorded")


def _pyros(model, guide):
    return Trace_ELBO()(model, guide)


@pytest.mark.parametrize("module_local", [False, True])
@pytest.mark.parametrize("guide_class", [AutoNormal, AutoMultivariateNormal])
def test_a_torch_loop_gives_pyros_losses(guide_class, module_local):
    want, _ = _loop(_pyros, guide_class, module_local=module_local)
    got, module = _loop(_ours, guide_class, module_local=module_local)
    assert module.engine == "recorded", module.reason
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_gradients_accumulate_over_calls():
    want, _ = _loop(_pyros, AutoNormal, accumulate=2)
    got, module = _loop(_ours, AutoNormal, accumulate=2)
    assert module.engine == "recorded"
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_the_conjugate_posterior_is_recovered():
    y = CONJUGATE_Y
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(conjugate_normal)
    loss_fn = guide_core.ELBOModule(
        conjugate_normal, guide, Trace_ELBO(num_particles=8)
    )
    loss_fn(y)
    optim = torch.optim.Adam(loss_fn.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.ExponentialLR(optim, gamma=0.998)
    for _ in range(2000):
        optim.zero_grad()
        loss_fn(y).backward()
        optim.step()
        sched.step()
    assert loss_fn.engine == "recorded"
    loc, scale = conjugate_posterior(y)
    assert float(guide.locs.mu) == pytest.approx(loc, abs=0.03)
    assert float(guide.scales.mu) == pytest.approx(scale, rel=0.1)


def test_eager_is_pyros_loss():
    x, y = _data()
    model = Model(SIZE)
    loss_fn = guide_core.ELBOModule(
        model, AutoNormal(model), Trace_ELBO(), engine="eager"
    )
    assert loss_fn(x, y).requires_grad
    assert loss_fn.engine == "eager"
    with pytest.raises(
        ValueError, match="'engine' must be 'auto', 'recorded' or 'eager'"
    ):
        guide_core.ELBOModule(model, AutoNormal(model), Trace_ELBO(), engine="x")


def test_pyros_svi_lightning_example_runs_with_it():
    pl = pytest.importorskip("lightning.pytorch")

    class PyroLightningModule(pl.LightningModule):  # as in Pyro's example
        def __init__(self, loss_fn, lr):
            super().__init__()
            self.loss_fn, self.lr = loss_fn, lr

        def training_step(self, batch, batch_idx):
            return self.loss_fn(*batch)

        def configure_optimizers(self):
            return torch.optim.Adam(self.loss_fn.parameters(), lr=self.lr)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x, y = _data()
    with pyro.settings.context(module_local_params=True):
        model = Model(SIZE)
        guide = AutoNormal(model)
        loss_fn = guide_core.ELBOModule(model, guide, Trace_ELBO())
        dataset = torch.utils.data.TensorDataset(x, y)
        loader = torch.utils.data.DataLoader(dataset, batch_size=20)
        loss_fn(*dataset[:20])
        trainer = pl.Trainer(
            max_epochs=30,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(PyroLightningModule(loss_fn, 0.03), train_dataloaders=loader)
        assert loss_fn.engine == "recorded", loss_fn.reason
        assert float(guide.locs.coeff) == pytest.approx(2.0, abs=0.15)
        assert float(guide.locs.bias) == pytest.approx(0.5, abs=0.15)
