"""Steps in posterior units: whitened location steps, the travel rule's step
halving and its running average (``guide_core.workflow.engines.scaled_steps``)."""

import pyro
import torch

from guide_core.core.gaussian_start import Whitening, location_steps
from guide_core.workflow.engines.scaled_steps import (
    MIN_RATE,
    ScaledAdam,
    ScaleTable,
    Travel,
    scaled_optim,
)

COV = torch.tensor([[1.0, 0.999], [0.999, 1.0]])


def test_whitened_steps_move_along_the_ridge():
    # Adam's first step is lr * sign(gradient) in the coordinates it runs in:
    # whitened, that is lr posterior sds along L's columns, not per element
    factor = torch.linalg.cholesky(COV)
    p = torch.zeros(2, requires_grad=True)
    table = ScaleTable()
    table[p] = Whitening(factor)
    optim = ScaledAdam([p], lr=0.1, scales=table)
    p.grad = torch.tensor([-1.0, -1.0])
    optim.step()
    expected = 0.1 * factor @ torch.sign(factor.T @ torch.tensor([1.0, 1.0]))
    assert torch.allclose(p.detach(), expected, atol=1e-6)


def test_whitened_adam_reaches_the_end_of_a_ridge():
    # gradients as SVI's are: the posterior's curvature plus noise of the
    # same covariance (the score at a draw), on a ridge of correlation 0.999
    target = torch.tensor([20.0, 20.0])
    precision = torch.linalg.inv(COV)
    noise = torch.distributions.MultivariateNormal(torch.zeros(2), precision)

    def run(scale):
        torch.manual_seed(0)
        p = torch.zeros(2, requires_grad=True)
        table = ScaleTable()
        table[p] = scale
        optim = ScaledAdam([p], lr=0.05, scales=table)
        for _ in range(1000):
            p.grad = precision @ (p.detach() - target) + noise.sample()
            optim.step()
        return p.detach()

    def sds_away(p):  # Mahalanobis: posterior sds, across the ridge too
        d = p - target
        return float((d @ precision @ d).sqrt())

    assert sds_away(run(location_steps(COV))) < 0.5
    # element-wise steps of the marginal sd jitter across the ridge, whose
    # sd is 0.045: a step of 0.05 throws the point off by a whole sd
    assert sds_away(run(COV.diagonal().sqrt())) > 1.0


def test_location_steps_fall_back_to_marginal_sds():
    # a covariance that does not factor: element-wise marginal sds
    steps = location_steps(torch.diag(torch.tensor([-1.0, 4.0])))
    assert torch.equal(steps, torch.tensor([0.0, 2.0]))


def _run_travel(values, window=10, steps=3000):
    """Feed ``values(step, rate)`` to a Travel over the param ``w``; return
    whether it stopped, the rates seen and the settled value."""
    pyro.clear_param_store()
    pyro.param("w", torch.zeros(3))
    table = scaled_optim({"w": torch.ones(3)}).pt_optim_args["scales"]
    travel = Travel({"w": torch.ones(3)}, window=window, table=table)
    (tensor,) = (p for _, p in pyro.get_param_store().named_parameters())
    rates, stopped = [], False
    for step in range(steps):
        with torch.no_grad():
            tensor.copy_(values(step, table.rate))
        rates.append(table.rate)
        if travel.update():
            stopped = True
            break
    travel.settle()
    return stopped, rates, pyro.param("w").detach()


def test_travel_halves_the_step_of_a_fit_that_only_jitters():
    # jitter around 1.0 with an amplitude that follows the step, as SGD's does
    gen = torch.Generator().manual_seed(0)
    stopped, rates, settled = _run_travel(
        lambda step, rate: 1.0 + 2.0 * rate * torch.randn(3, generator=gen)
    )
    assert stopped
    assert rates[-1] < 1.0 and min(rates) >= MIN_RATE
    # settled at the running average of the iterates, not the last jittered one
    assert torch.allclose(settled, torch.ones(3), atol=0.1)


def test_travel_never_stops_a_fit_that_is_still_moving():
    stopped, rates, _ = _run_travel(lambda step, rate: torch.full((3,), 0.01 * step))
    assert not stopped
    assert rates[-1] == 1.0  # a journey keeps its pace
