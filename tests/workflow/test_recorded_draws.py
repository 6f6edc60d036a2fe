"""Single draws replayed from one recording are the eager draws, or not used."""

from __future__ import annotations

import functools

import pyro
import pyro.distributions as dist
import torch

from guide_core import AutoNormal, fit, psis_khat
from guide_core.core.capture import recorded_draws as rd
from guide_core.core.draws import over_draws, paired_traces

X = torch.tensor([[1.0, 0.5], [0.3, -1.0], [2.0, 0.1], [-0.4, 0.8]])
Y = torch.tensor([1.2, -0.4, 2.1, 0.3])


def regression(x, y):
    coef = pyro.sample("coef", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
    with pyro.plate("n", len(y)):
        pyro.sample("y", dist.Normal(x @ coef, 0.5), obs=y)  # does not vectorize


def _fitted():
    pyro.clear_param_store()
    guide = AutoNormal(regression)
    fit(
        regression,
        guide,
        X,
        Y,
        steps=30,
        tol=None,
        seed=0,
        khat=False,
        progress=False,
        engine="eager",
    )
    return guide


def _eager_only(monkeypatch):
    """Draw eagerly: no number of draws is enough to record them."""
    monkeypatch.setattr(
        "guide_core.core.draws.recorded_draws",
        functools.partial(rd.recorded_draws, min_draws=10**9),
    )


def _log_weights(model_trace, guide_trace):
    def collect(mt, gt, num_draws, dim):
        mt.compute_log_prob(), gt.compute_log_prob()
        w = sum(s["log_prob_sum"] for s in mt.nodes.values() if s["type"] == "sample")
        w = w - sum(
            s["log_prob_sum"] for s in gt.nodes.values() if s["type"] == "sample"
        )
        return {"w": w.reshape(1), "coef": gt.nodes["coef"]["value"].reshape(1, 2)}

    return collect


def test_recorded_draws_are_the_eager_draws_bit_for_bit(monkeypatch):
    guide = _fitted()
    calls = []
    real = rd.recorded_draws
    monkeypatch.setattr(
        "guide_core.core.draws.recorded_draws",
        lambda *a, **k: calls.append(real(*a, **k)) or calls[-1],
    )
    pyro.set_rng_seed(3)
    recorded = over_draws(regression, guide, 200, (X, Y), {}, _log_weights)
    _eager_only(monkeypatch)
    pyro.set_rng_seed(3)
    eager = over_draws(regression, guide, 200, (X, Y), {}, _log_weights)
    assert calls and calls[0] is not None  # the recorded draws were used
    assert set(recorded) == {"w", "coef"}
    for key in recorded:
        assert torch.equal(recorded[key], eager[key]), key
    assert recorded["coef"].std(0).min() > 0.01  # fresh draws, not one repeated


def test_a_draw_that_reads_a_value_is_not_recorded():
    def branching(x, y):
        coef = pyro.sample("coef", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        scale = 0.5 if coef[0] > 0 else 1.0
        with pyro.plate("n", len(y)):
            pyro.sample("y", dist.Normal(x @ coef, scale), obs=y)

    pyro.clear_param_store()
    guide = AutoNormal(branching)
    guide(X, Y)

    def draw(args, kwargs):
        return _log_weights(None, None)(
            *paired_traces(branching, guide, args, kwargs), 1, None
        )

    assert rd.recorded_draws(draw, 100, (X, Y), {}) is None
    assert rd.recorded_draws(draw, rd.MIN_DRAWS - 1, (X, Y), {}) is None
    assert rd.recorded_draws(draw, 100, (X, Y), {}, min_draws=101) is None


def test_the_khat_of_a_model_that_does_not_vectorize_is_unchanged(monkeypatch):
    guide = _fitted()
    pyro.set_rng_seed(5)
    fast = psis_khat(regression, guide, X, Y, num_samples=300)
    _eager_only(monkeypatch)
    pyro.set_rng_seed(5)
    slow = psis_khat(regression, guide, X, Y, num_samples=300)
    assert fast.value == slow.value
