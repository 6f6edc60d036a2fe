"""The funsor back end replays funsor's recorded tensor program: the same
losses, gradients and draws as running funsor on every call, and recordings
that could go stale are refused."""

from __future__ import annotations

import copy
import pickle

import pyro
import pyro.distributions as dist
import pyro.infer.autoguide as oracle
import pytest
import torch
from guide_plugins.gaussian import funsor_backend
from oracle import DATA, MODELS, run_svi
from pyro.infer import SVI, Predictive, Trace_ELBO

import guide_core
from guide_core.core.capture import NotCapturable, ProgramCache, perturbed, record

pytest.importorskip("funsor")

AutoGaussian = guide_core.AutoGaussian


def hierarchical_model(y):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("groups", len(y)):
        theta = pyro.sample("theta", dist.Normal(loc, scale))
        pyro.sample("y", dist.Normal(theta, 1.0), obs=y)


Y = torch.linspace(-2.0, 3.0, 7)


def two_latents_per_plate_model(data):
    """Event-shaped and plated latents; two latents share the plate ``p``."""
    a = pyro.sample("a", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with pyro.plate("p", 3, dim=-1):
        b = pyro.sample("b", dist.Normal(a.sum(-1), 1.0))
        e_loc = b.unsqueeze(-1).expand(b.shape + (2,))
        e = pyro.sample("e", dist.Normal(e_loc, 1.0).to_event(1))
        with pyro.plate("q", 2, dim=-2):
            c = pyro.sample("c", dist.Normal(e.sum(-1) + a[..., 0], 1.0))
            pyro.sample("obs", dist.Normal(c, 1.0), obs=data)


TWO = torch.tensor([[0.3, -1.0, 0.5], [1.2, 0.1, -0.4]])


def _never_replay(monkeypatch):
    def refuse(fn, inputs, **kwargs):
        raise NotCapturable("disabled by the test")

    monkeypatch.setattr(funsor_backend, "record", refuse)


def _train(model, args, elbo, steps=6):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoGaussian(model, backend="funsor")
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), elbo)
    losses = [svi.step(*args) for _ in range(steps)]
    # one more differentiable loss, to compare gradients
    loss = elbo.differentiable_loss(model, guide, *args)
    params = [p for _, p in sorted(guide.named_parameters())]
    grads = torch.autograd.grad(loss, params)
    return guide, losses, grads


@pytest.mark.parametrize(
    "model, args",
    [
        (hierarchical_model, (Y,)),
        (MODELS["plated"], (DATA,)),
        (two_latents_per_plate_model, (TWO,)),
    ],
    ids=["hierarchical", "plated", "two_latents_per_plate"],
)
@pytest.mark.parametrize("particles", [1, 3])
def test_replay_equals_funsor_on_every_call(monkeypatch, model, args, particles):
    def elbo():
        return Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1)

    guide, losses, grads = _train(model, args, elbo())
    assert [p for p in guide._programs.values() if p is not None]  # it replayed
    _never_replay(monkeypatch)
    eager, eager_losses, eager_grads = _train(model, args, elbo())
    assert all(p is None for p in eager._programs.values())
    assert losses == eager_losses  # the same operations: exactly the same numbers
    for a, b in zip(grads, eager_grads):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "model, args",
    [
        (two_latents_per_plate_model, (TWO,)),
        (hierarchical_model, (Y,)),
        (MODELS["plated"], (DATA,)),
    ],
    ids=["two_latents_per_plate", "hierarchical", "plated"],
)
def test_same_draws_and_losses_as_pyros_funsor_bit_for_bit(model, args):
    # Adding a plate's factors into one funsor term gave other draws than Pyro's
    # for a seed: other coordinates' noise with two latents in the plate (a
    # different first loss), other rounding with one.
    def pyros(m):
        return oracle.AutoGaussian(m, backend="funsor")

    ours = run_svi(lambda m: AutoGaussian(m, backend="funsor"), model, *args, steps=5)
    theirs = run_svi(pyros, model, *args, steps=5, levels=None)
    assert ours.losses == theirs.losses
    for name, value in theirs.params.items():
        assert torch.equal(ours.params[name], value), name
    pyro.set_rng_seed(4)
    expected = theirs.guide(*args)
    pyro.set_rng_seed(4)
    got = ours.guide(*args)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_new_shapes_are_recorded_again():
    guide = AutoGaussian(hierarchical_model, backend="funsor")
    guide(Y)
    Predictive(hierarchical_model, guide=guide, num_samples=4, parallel=True)(Y)
    assert len(guide._programs) == 2  # no particle plate, then one of size 4
    draws = Predictive(hierarchical_model, guide=guide, num_samples=4, parallel=True)
    assert draws(Y)["theta"].shape == (4, len(Y))  # as Pyro's


def test_a_copied_guide_records_again_and_draws_the_same():
    guide = AutoGaussian(hierarchical_model, backend="funsor")
    guide(Y)
    for clone in (copy.deepcopy(guide), pickle.loads(pickle.dumps(guide))):
        assert isinstance(clone._programs, ProgramCache) and not clone._programs
        pyro.set_rng_seed(3)
        expected = guide(Y)
        pyro.set_rng_seed(3)
        got = clone(Y)
        assert clone._programs
        for name in expected:
            assert torch.equal(expected[name], got[name])


# -- the recorder itself (the core's capture layer, as the funsor back end uses it) ---


def test_a_program_replays_the_operations_and_the_random_draws():
    def fn(a, b):
        torch.randn(5)  # unused, but it moves the random stream
        noise = torch.randn(a.shape)
        total = torch.cat([a * b, noise], -1).sum(-1, keepdim=True)
        return a + noise, total.exp()

    a, b = torch.randn(2, 3, requires_grad=True), torch.randn(3)
    program = record(fn, [a, b], differentiable=True)
    a2, b2 = torch.randn(2, 3), torch.randn(3)
    pyro.set_rng_seed(7)
    expected = fn(a2, b2)
    pyro.set_rng_seed(7)
    got = program(a2, b2)
    for x, y in zip(expected, got):
        assert torch.equal(x, y)
    grad = torch.autograd.grad(program(a, b)[1].sum(), a)[0]
    assert grad.shape == a.shape and grad.abs().sum() > 0


def test_reading_a_value_into_python_is_refused():
    def fn(x):
        return (x * 2,) if x.sum() > 0 else (x * 3,)  # control flow on a value

    pyro.set_rng_seed(1)
    with pytest.raises(NotCapturable, match=r"reads a tensor's value .*__bool__"):
        record(fn, [torch.ones(3)])
    # the refusal left the caller's random stream as it was: the caller's own
    # call of ``fn`` then draws what it would have drawn without the attempt
    after = torch.rand(3)
    pyro.set_rng_seed(1)
    assert torch.equal(after, torch.rand(3))


def test_a_captured_tensor_that_needs_a_gradient_is_refused():
    weight = torch.ones(3, requires_grad=True)
    with pytest.raises(NotCapturable, match="needs a gradient but is no input"):
        record(lambda x: (x * weight,), [torch.ones(3)], differentiable=True)


def test_a_stale_cache_is_caught_by_the_check_on_perturbed_inputs():
    cache = {}

    def fn(x):
        if "scale" not in cache:  # computed once, from the first input
            cache["scale"] = x.detach().sum()
        return (x * cache["scale"],)

    x = torch.ones(3)
    with pytest.raises(NotCapturable, match="disagrees"):
        record(fn, [x], check_inputs=perturbed([x]))


def test_the_cache_keeps_the_newest_signatures():
    cache = ProgramCache()
    for i in range(ProgramCache.MAX_SIZE + 3):
        cache[i] = None
    assert list(cache) == list(range(3, ProgramCache.MAX_SIZE + 3))
