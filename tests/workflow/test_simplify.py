"""The recorded program's simplification: shorter, and bit for bit the same steps."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.fx.experimental.proxy_tensor import make_fx

from guide_core import AutoDelta, AutoMultivariateNormal, AutoNormal
from guide_core.core.capture import simplify
from guide_core.core.seeded import run_seeded
from guide_core.workflow.engines.eager import all_sums_finite, eager_loss_and_grads
from guide_core.workflow.engines.losses import recordable_loss
from guide_core.workflow.engines.program import record

aten = torch.ops.aten
Y = torch.tensor([0.5, 1.0, 1.5, 0.2, 1.1, 0.8, -0.3, 0.9])


def regression(y):
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    loc = pyro.sample("loc", dist.Normal(0.0, 2.0))
    with pyro.plate("n", len(y), subsample_size=5) as idx:
        pyro.sample("y", dist.Normal(loc, scale), obs=y[idx])


def hierarchical(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("g", len(y)):
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("y", dist.Normal(z, 0.5), obs=y)


def _params(model, guide, elbo):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi_like = type("S", (), {})()
    svi_like.model, svi_like.guide = model, guide
    svi_like.loss_and_grads = elbo.loss_and_grads
    _, params = eager_loss_and_grads(svi_like, (Y,), {})
    for p in params.values():
        p.grad = None
    return list(params.items())


def _raw_and_simplified(model, guide, elbo):
    """The same step recorded twice: as make_fx left it, and simplified."""
    params = _params(model, guide, elbo)
    loss_fn = recordable_loss(elbo)
    program, _ = run_seeded(
        lambda: record(loss_fn, model, guide, params, (Y,), {}), 1, []
    )
    leaves = [p for _, p in params]

    def step(*flat):
        ps = list(flat[: len(leaves)])
        loss = loss_fn(model, guide, (flat[len(leaves)],), {})
        grads = torch.autograd.grad(loss, ps, allow_unused=True)
        grads = [g for g in grads if g is not None]
        finite = all_sums_finite([loss.detach(), *grads])
        return (loss.detach(), *grads, finite)  # as the recorder's step

    with pyro.validation_enabled(False):
        raw = run_seeded(lambda: make_fx(step)(*leaves, Y), 1, [])
    return raw, program, leaves


CASES = {
    "normal-subsampled": (regression, AutoNormal, Trace_ELBO),
    "delta": (regression, AutoDelta, Trace_ELBO),
    "mvn-meanfield": (hierarchical, AutoMultivariateNormal, TraceMeanField_ELBO),
    "normal-plate": (hierarchical, AutoNormal, Trace_ELBO),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_simplified_program_is_bitwise_the_raw_one_and_shorter(case):
    model, guide_cls, elbo_cls = CASES[case]
    raw, program, leaves = _raw_and_simplified(model, guide_cls(model), elbo_cls())
    for seed in (0, 1, 2):
        with torch.no_grad():
            want = run_seeded(lambda: raw(*leaves, Y), seed, [])
        got_loss, got = run_seeded(lambda: program(leaves, [Y]), seed, [])
        assert torch.equal(want[0], got_loss) and bool(program.finite)
        assert len(want) - 2 == sum(g is not None for g in got)
        for w, g in zip(want[1:-1], [g for g in got if g is not None]):
            assert torch.equal(w, g)
    # and the random stream after a step is where the raw program leaves it
    with torch.no_grad():
        run_seeded(lambda: raw(*leaves, Y), 5, [])
    after_raw = run_seeded(lambda: (raw(*leaves, Y), torch.rand(3))[1], 5, [])
    after = run_seeded(lambda: (program(leaves, [Y]), torch.rand(3))[1], 5, [])
    assert torch.equal(after_raw, after)
    assert len(program.graph.graph.nodes) < 0.85 * len(raw.graph.nodes)


def test_two_draws_into_alike_buffers_stay_two_draws():
    def f(x):
        a = torch.empty(3).normal_()
        b = torch.empty(3).normal_()
        return (x + a * 1) - (x + b * 1)

    gm = simplify(make_fx(f)(torch.zeros(3)))
    draws = [n for n in gm.graph.nodes if n.target is aten.normal_.default]
    assert len(draws) == 2
    assert not torch.equal(gm(torch.zeros(3)), torch.zeros(3))


def test_constants_are_folded_and_identities_dropped():
    c = torch.tensor([1.0, 2.0, 3.0])

    def f(x):
        return (x * 1 - 0) * torch.log(c * 2) + torch.zeros_like(x).exp()

    gm = simplify(make_fx(f)(torch.ones(3)))
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert aten.log.default not in targets and aten.zeros_like.default not in targets
    assert targets == [aten.mul.Tensor, aten.add.Tensor]
    x = torch.randn(3)
    assert torch.equal(gm(x), f(x))


def test_an_output_never_shares_memory_with_the_program_or_an_input():
    c = torch.tensor([1.0, 2.0])

    def f(x):
        return x * 1, torch.log(c).expand(2), x.view(2)

    gm = simplify(make_fx(f)(torch.ones(2)))
    x = torch.ones(2)
    first = gm(x)
    for out in first:
        out.mul_(0.0)  # an optimizer may clip a gradient in place
    assert torch.equal(x, torch.ones(2))
    assert torch.equal(gm(x)[1], torch.log(c))


def test_calls_go_through_bindings_only_where_they_agree(monkeypatch):
    from guide_core.core.capture import bindings

    def f(x):
        return (x + 2.0).exp().sum(), torch.empty(2).normal_() * x

    x = torch.randn(2)
    gm, rewritten = bindings.use_bindings(make_fx(f)(x), [x])
    kinds = {n.target: n.op for n in gm.graph.nodes}
    # add, exp, sum, mul (and torch.empty when two fresh buffers happen to agree)
    assert rewritten in (4, 5) and {torch.add, torch.exp, torch.sum} <= set(kinds)
    assert kinds[aten.normal_.default] == "call_function"  # draws keep their op
    real = bindings._binding
    # a binding that computes something else is never used
    monkeypatch.setattr(
        bindings,
        "_binding",
        lambda n: (
            ("call_function", torch.sub) if n.target is aten.add.Tensor else real(n)
        ),
    )
    gm, _ = bindings.use_bindings(make_fx(f)(x), [x])
    assert aten.add.Tensor in {n.target for n in gm.graph.nodes}
    assert torch.equal(gm(x)[0], (x + 2.0).exp().sum())


def test_a_copy_that_changes_strides_is_kept_for_the_views_after_it():
    def f(x):
        return x.t().contiguous().view(-1) * 2.0  # the view needs the copy

    x = torch.randn(3, 4)
    gm = simplify(make_fx(f)(x))
    assert torch.equal(gm(x), f(x))


@pytest.mark.parametrize("kind", ["mv", "addmv", "small"])
def test_large_matrix_vector_products_go_to_inductor_as_blas_calls(kind):
    from guide_core.workflow.engines.for_inductor import blas_products

    rows = 3 if kind == "small" else 300
    a, v, b = torch.randn(rows, 40), torch.randn(40), torch.randn(rows)

    def step(a, v, b):
        if kind == "addmv":
            return (torch.addmv(b, a, v, beta=0.5, alpha=2.0),)
        return ((a @ v).exp(),)

    gm = make_fx(step)(a, v, b)
    want = gm(a, v, b)[0]
    rewritten = blas_products(gm)
    ops = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert rewritten == (0 if kind == "small" else 1)
    assert (aten.mm.default in ops or aten.addmm.default in ops) == (kind != "small")
    assert not ({aten.mv.default, aten.addmv.default} & ops) or kind == "small"
    torch.testing.assert_close(gm(a, v, b)[0], want)
