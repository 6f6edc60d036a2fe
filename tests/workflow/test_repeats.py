"""A call repeated while a step is recorded is computed once: one backward pass
for both uses, the same values, and never for draws or writes."""

from __future__ import annotations

import pyro
import torch

from guide_core.workflow.engines.program import record
from guide_core.workflow.engines.repeats import ReuseRepeats


def _spd(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen)
    return a @ a.T + n * torch.eye(n)


def test_a_repeated_call_gets_the_first_result():
    p = _spd()
    with ReuseRepeats() as reuse:
        first = torch.linalg.cholesky(p)
        again = torch.linalg.cholesky(p)
        t1, t2 = first.mT, again.mT  # the same tensor: its view is reused too
    assert again is first and t2 is t1 and reuse.reused == 2
    assert not reuse.stale()


def test_random_draws_are_never_reused():
    x = torch.zeros(4)
    with ReuseRepeats() as reuse:
        a, b = torch.randn_like(x), torch.randn_like(x)
        c, d = torch.bernoulli(x + 0.5), torch.bernoulli(x + 0.5)
        e, f = torch.randn(4), torch.randn(4)
    assert not torch.equal(a, b) and not torch.equal(e, f)
    assert c is not d and reuse.reused == 1  # only ``x + 0.5``


def test_a_call_after_a_write_is_computed_again():
    x = torch.ones(3)
    with ReuseRepeats():
        before = x * 2
        x.add_(1)  # the input changed
        after = x * 2
        y = x.exp()
        y.mul_(2)  # the first result changed
        z = x.exp()
    assert torch.equal(before, torch.full((3,), 2.0))
    assert torch.equal(after, torch.full((3,), 4.0))
    torch.testing.assert_close(z, torch.full((3,), 2.0).exp())


def test_a_write_into_a_shared_result_makes_it_stale():
    x = torch.ones(3)
    with ReuseRepeats() as reuse:
        y = x.exp()
        z = x.exp()
        z.add_(1)
    assert z is y and reuse.stale()


def _gaussian_loss(write_into_a_repeat: bool):
    """A loss that factorises the same precision twice, as funsor does."""

    def loss_fn(model, guide, args, kwargs):
        root = pyro.param("root")
        precision = root @ root.mT + torch.eye(root.size(0))
        first = torch.linalg.cholesky(precision)
        again = torch.linalg.cholesky(precision)
        draw = torch.linalg.solve_triangular(
            first.mT, args[0].unsqueeze(-1), upper=True
        )
        loss = draw.pow(2).sum() + again.diagonal().log().sum()
        if write_into_a_repeat:
            a, b = precision * 3.0, precision * 3.0
            b.mul_(2.0)  # shared, this write would reach ``a``: 0 becomes a.sum()
            loss = loss + a.sum() - 0.5 * b.sum()
        return loss

    return loss_fn


def _ops(graph, name):
    """How many calls of the aten op ``name`` (or its binding) the graph makes."""
    return sum(
        getattr(n.target, "__name__", str(n.target)).split(".")[0] == name
        for n in graph.graph.nodes
    )


def test_the_recorded_step_has_one_backward_pass_and_eager_gradients():
    pyro.clear_param_store()
    root = pyro.param("root", _spd(8) / 4)
    y = torch.randn(8)
    params = [("root", pyro.param("root").unconstrained())]
    want = torch.autograd.grad(_gaussian_loss(False)(None, None, (y,), {}), root)[0]
    graphs = {}
    for reuse in (True, False):
        program, _ = record(_gaussian_loss(False), None, None, params, (y,), {}, reuse)
        loss, (grad,) = program([params[0][1]], [y])
        torch.testing.assert_close(grad, want)
        graphs[reuse] = program.graph
    # without reuse: one Cholesky forward (merged) but two backward passes
    solves = {r: _ops(g, "linalg_solve_triangular") for r, g in graphs.items()}
    assert solves[True] < solves[False]


def test_a_write_into_a_shared_result_records_without_reuse():
    pyro.clear_param_store()
    root = pyro.param("root", _spd(5) / 4)
    y = torch.randn(5)
    params = [("root", pyro.param("root").unconstrained())]
    loss_fn = _gaussian_loss(True)
    want_loss = loss_fn(None, None, (y,), {})
    want = torch.autograd.grad(want_loss, root)[0]
    program, _ = record(loss_fn, None, None, params, (y,), {})
    loss, (grad,) = program([params[0][1]], [y])
    torch.testing.assert_close(loss, want_loss.detach())
    torch.testing.assert_close(grad, want)
