"""The engines' private torch and Pyro names each have a public fallback: with
every fallback forced, the steps are Pyro's steps (slower, never wrong)."""

from __future__ import annotations

import contextlib

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch.fx.experimental.proxy_tensor import make_fx

import guide_core
from guide_core import AutoMultivariateNormal, AutoNormal
from guide_core.core import private_torch
from guide_core.workflow.engines import private_pyro
from guide_core.workflow.engines.fused_adam import DirectFusedAdam

Y = torch.tensor([0.3, -1.2, 2.1, 0.8, 1.7, -0.4])


def model(y):
    loc = pyro.sample("loc", dist.Normal(0.0, 5.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(loc, scale), obs=y)


def _losses(svi_class, guide_class, optim, steps=30, **kw):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = svi_class(model, guide_class(model), optim(), Trace_ELBO(), **kw)
    return [svi.step(Y) for _ in range(steps)], svi


OPTIMS = {
    "adam": lambda: pyro.optim.Adam({"lr": 0.05}),
    "clipped_adam": lambda: pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.99}),
}


@pytest.mark.parametrize("optim", list(OPTIMS))
@pytest.mark.parametrize("guide_class", [AutoNormal, AutoMultivariateNormal])
def test_public_torch_only_still_records_pyros_steps(guide_class, optim):
    want, _ = _losses(pyro.infer.SVI, guide_class, OPTIMS[optim])
    with private_torch.public_only():
        assert private_torch.binding_namespaces() == (torch,)
        assert private_torch.fused_adam_kernels() is None
        assert isinstance(private_torch.untraced(), contextlib.nullcontext)
        got, svi = _losses(
            guide_core.SVI, guide_class, OPTIMS[optim], engine="recorded"
        )
    assert svi.engine == "recorded", svi.reason
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("optim", list(OPTIMS))
def test_public_pyro_only_runs_pyros_step_and_updates(optim):
    want, _ = _losses(pyro.infer.SVI, AutoNormal, OPTIMS[optim])
    with private_pyro.public_only():
        assert private_pyro.trace_builder(Trace_ELBO()) is None
        assert private_pyro.model_factors() is None
        with pytest.warns(RuntimeWarning, match="cannot be read in this Pyro"):
            got, svi = _losses(
                guide_core.SVI, AutoNormal, OPTIMS[optim], engine="recorded"
            )
    assert svi.engine == "eager"
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("optim", list(OPTIMS))
def test_optimizers_made_without_private_pyro_are_pyros(optim):
    """Made as Pyro's first step makes them (state waiting from ``load``
    included), and not stepped: the parameter and the rate are unchanged."""
    pyro.clear_param_store()
    p = pyro.param("p", torch.ones(3)).unconstrained()
    p.grad = torch.ones(3)
    first = OPTIMS[optim]()
    first([p])  # one real step: state to resume from
    state = first.get_state()
    resumed = OPTIMS[optim]()
    resumed.set_state(state)
    before = p.detach().clone()
    with private_pyro.public_only():
        private_pyro.make_optimizers(resumed, [p])
    made = resumed.optim_objs[p]
    assert torch.equal(p.detach(), before) and torch.equal(p.grad, torch.ones(3))
    assert made.state_dict()["param_groups"] == state["p"]["param_groups"]
    saved = state["p"]["state"][0]
    for key, value in made.state_dict()["state"][0].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(saved[key])), key


def test_direct_fused_adam_steps_down_to_the_optimizers_step():
    p = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.1, fused=True)
    p.grad = torch.ones(3)
    opt.step()
    assert DirectFusedAdam.of(opt) is not None
    with private_torch.public_only():
        assert DirectFusedAdam.of(opt) is None


def test_compiling_without_private_torch_uses_torch_compile():
    def f(x):
        return (x.sin() * 2).sum()

    x = torch.randn(5)
    graph = make_fx(f)(x)
    with private_torch.public_only():
        compiled = private_torch.compile_graph(graph, [x])
    assert torch.allclose(compiled(x), f(x))
