"""AutoGaussian under ``torch.jit``: a trained guide and a ``Predictive`` are
traced with ``torch.jit.trace_module`` (as Pyro's own serialization and
predictive tests do), saved, loaded and compared with the eager guide; and
``JitTrace_ELBO`` trains as ``Trace_ELBO`` does."""

from __future__ import annotations

import io
import warnings
from operator import attrgetter

import pyro
import pyro.distributions as dist
import pyro.infer.autoguide as oracle
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO, Predictive, Trace_ELBO

import guide_core

AutoGaussian = guide_core.AutoGaussian
BACKENDS = ["dense", "sparse"]  # funsor's einsum is not exportable (nor is Pyro's)


def model(data=None):
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    with pyro.plate("plate", 2):
        y = pyro.sample("y", dist.LogNormal(x, 1.0))
        z = pyro.sample("z", dist.Normal(x, 1.0))  # a Beta's draw is not exportable
        pyro.sample("obs", dist.Normal(y * z, 1.0), obs=data)


DATA = torch.tensor([0.4, 1.3])


def _trained(backend, steps=5, elbo=None):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoGaussian(model, backend=backend)
    elbo = Trace_ELBO() if elbo is None else elbo
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), elbo)
    losses = [svi.step(DATA) for _ in range(steps)]
    return guide, losses


def _reload(module):
    f = io.BytesIO()
    torch.jit.save(module, f)
    f.seek(0)
    return torch.jit.load(f)


def _trace(module, inputs, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        return torch.jit.trace_module(module, inputs, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_traced_guide_draws_what_the_eager_one_does(backend):
    guide, _ = _trained(backend)
    pyro.set_rng_seed(0)
    expected = guide.call(DATA)
    names = sorted(guide(DATA))
    loaded = _reload(_trace(guide, {"call": (DATA,)}, check_trace=False))
    for seed in (0, 1):  # the random draws are in the traced graph, not constants
        pyro.set_rng_seed(seed)
        actual = loaded.call(DATA)
        assert len(actual) == len(expected) == len(names)
        for name, a, e in zip(names, actual, expected):
            if seed == 0:
                torch.testing.assert_close(a, e, msg=name)
            else:
                assert not torch.equal(a, e), name
    expected_names = {name for name, _ in guide.named_parameters()}
    assert {name for name, _ in loaded.named_parameters()} == expected_names
    for name in expected_names:
        get = attrgetter(name)
        torch.testing.assert_close(get(loaded), get(guide).data)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_traced_predictive_samples_every_site(backend, parallel):
    guide, _ = _trained(backend)
    predictive = Predictive(model, guide=guide, num_samples=7, parallel=parallel)
    pyro.set_rng_seed(0)
    samples = predictive(None)
    assert {k: v.shape for k, v in samples.items()} == {
        "x": (7, 1),
        "y": (7, 2),
        "z": (7, 2),
        "obs": (7, 2),
    }
    assert all(torch.isfinite(v).all() for v in samples.values())
    loaded = _reload(_trace(predictive, {"call": (DATA,)}))  # check_trace, as Pyro's
    pyro.set_rng_seed(0)
    actual = loaded.call(DATA)
    # Predictive consumes the random stream in another order when traced (Pyro's
    # guides' values differ too), so compare shapes, and the draws for a seed.
    expected = predictive.call(DATA)
    assert [a.shape for a in actual] == [e.shape for e in expected]
    assert all(torch.isfinite(a).all() for a in actual)
    pyro.set_rng_seed(0)
    for a, b in zip(actual, loaded.call(DATA)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jit_elbo_loss_and_gradient_are_the_eager_ones(backend):
    guide, losses = _trained(backend, elbo=JitTrace_ELBO())
    assert all(torch.isfinite(torch.tensor(losses)))
    named = sorted(guide.named_parameters())
    params = [p for _, p in named]
    grads = {}
    for elbo in [JitTrace_ELBO(), Trace_ELBO()]:
        elbo.loss_and_grads(model, guide, DATA)  # a JIT ELBO compiles on its first call
        for p in params:
            p.grad = None
        pyro.set_rng_seed(2)
        loss = elbo.loss_and_grads(model, guide, DATA)
        grads[type(elbo)] = loss, [p.grad.clone() for p in params]
    (jit_loss, jit_grads), (loss, eager_grads) = grads.values()
    assert jit_loss == pytest.approx(loss, rel=1e-6)
    for (name, _), a, b in zip(named, jit_grads, eager_grads):
        torch.testing.assert_close(a, b, msg=lambda m, n=name: f"{n}: {m}")
    samples = Predictive(model, guide=guide, num_samples=3, parallel=True)(None)
    assert samples["y"].shape == (3, 2)


def test_dense_jit_elbo_trains_as_pyros():
    pyro.clear_param_store()
    ours, pyros = [], []
    for make, out in [(AutoGaussian, ours), (oracle.AutoGaussian, pyros)]:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        guide = make(model)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), JitTrace_ELBO())
        out.extend(svi.step(DATA) for _ in range(8))
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(pyros))


def test_only_a_module_trace_takes_the_exportable_draw():
    from guide_plugins.gaussian.precision_mvn import _exporting

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(_exporting())
            return x * 2

    x = torch.ones(2)
    _trace(Probe(), {"forward": (x,)}, check_trace=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.jit.trace(lambda t: Probe().forward(t), (x,), check_trace=False)
    Probe()(x)
    # trace_module must export; a traced function (JitTrace_ELBO) and eager
    # code keep DenseDraw's fast backward
    assert seen == [True, False, False]
