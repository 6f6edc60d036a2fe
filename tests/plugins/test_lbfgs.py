"""Pathfinder's L-BFGS path: it finds the maximum, with few evaluations, and
stops where float64 can no longer tell a better point apart."""

from __future__ import annotations

import math

import pytest
import torch
from guide_plugins.pathfinder.lbfgs import _cubic_max, _Probe, lbfgs_path


def _gaussian(precision: torch.Tensor, mode: torch.Tensor):
    def value_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        d = x - mode
        return float(-0.5 * d @ precision @ d), -(precision @ d)

    return value_and_grad


def test_cubic_step_is_exact_on_a_cubic():
    def f(t):
        return -(t**3) + 3 * t  # maximum at t = 1

    def d(t):
        return -3 * t * t + 3

    assert _cubic_max(_Probe(0.0, f(0.0), d(0.0)), _Probe(2.0, f(2.0), d(2.0))) == (
        pytest.approx(1.0)
    )
    assert _cubic_max(_Probe(2.0, f(2.0), d(2.0)), _Probe(0.5, f(0.5), d(0.5))) == (
        pytest.approx(1.0)
    )


def test_ill_conditioned_gaussian_mode_and_evaluations():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    precision = q @ torch.diag(torch.logspace(0, 4, 6, dtype=torch.float64)) @ q.T
    mode = torch.linspace(-30, 30, 6, dtype=torch.float64)
    path = lbfgs_path(_gaussian(precision, mode), torch.zeros(6, dtype=torch.float64))
    assert torch.allclose(path.xs[-1], mode, atol=1e-6)
    iterations = path.xs.shape[0] - 1
    assert path.evaluations <= 1.25 * iterations + 5  # steps mostly taken at once


def test_the_path_stops_at_round_off_not_after_40_bisections():
    # log densities of -1e6: float64 resolves gains of about 1e-10 there
    scales = torch.tensor([1.0, 1e2, 1e4], dtype=torch.float64)

    def value_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        return float(-1e6 - 0.5 * x @ (scales * x)), -scales * x

    path = lbfgs_path(value_and_grad, torch.full((3,), 5.0, dtype=torch.float64))
    assert "round-off" in path.reason
    assert float(path.xs[-1].abs().max()) < 1e-4
    assert path.evaluations < path.xs.shape[0] + 10  # was + 40: bisections


def test_rosenbrock():
    def value_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        value = -(100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2)
        (grad,) = torch.autograd.grad(value, x)
        return float(value), grad

    start = torch.tensor([-1.2, 1.0], dtype=torch.float64)
    path = lbfgs_path(value_and_grad, start)
    assert torch.allclose(path.xs[-1], torch.ones(2, dtype=torch.float64), atol=1e-5)
    assert path.evaluations < 150
    assert torch.all(path.values[1:] >= path.values[:-1])  # ascent throughout


def test_steps_outside_the_support_are_pulled_back():
    # a Gamma(3, 1) log density on x itself: -inf at x <= 0, mode at 2
    def value_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        v = float(x[0])
        if v <= 0:
            return -math.inf, torch.full_like(x, math.nan)
        return 2 * math.log(v) - v, torch.tensor([2 / v - 1], dtype=torch.float64)

    path = lbfgs_path(value_and_grad, torch.tensor([40.0], dtype=torch.float64))
    assert float(path.xs[-1]) == pytest.approx(2.0, abs=1e-6)
    assert torch.isfinite(path.values).all()


def test_a_start_outside_the_support_is_an_error():
    def value_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        return -math.inf, torch.full_like(x, math.nan)

    with pytest.raises(ValueError, match="at the start"):
        lbfgs_path(value_and_grad, torch.zeros(2, dtype=torch.float64))
