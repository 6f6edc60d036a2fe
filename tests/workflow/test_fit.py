"""fit(): the SVI loop with a progress bar, convergence, NaN errors and Ctrl-C."""

from __future__ import annotations

import importlib
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from guide_core import (
    AutoDelta,
    AutoGuideList,
    AutoNormal,
    AutoNormalMessenger,
    FitResult,
    KHat,
    NonFiniteLossError,
    fit,
    init_to_feasible,
)
from guide_core.workflow.engines import Trainer

# ``guide_core.fit`` is the function; the module is reached through importlib.
fit_module = importlib.import_module("guide_core.workflow.fitting.loop")
convergence = importlib.import_module("guide_core.workflow.fitting.convergence")

Y = torch.tensor([0.5, 1.0, 1.5, 0.2, 1.1])


def model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("n", len(y)):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


def _params() -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


def _quiet(**kwargs):
    return {"progress": False, "khat": False, **kwargs}


# Models that keep Python state (call counters) are fitted eager here: a
# recorded step replays tensors, not Python (tests/workflow/test_engines.py
# checks the same rules on the recorded engine).
EAGER = {"engine": "eager"}


def test_same_steps_as_a_hand_written_svi_loop():
    pyro.set_rng_seed(0)
    guide = AutoNormal(model)
    svi = pyro.infer.SVI(
        model, guide, pyro.optim.Adam({"lr": 0.02}), pyro.infer.Trace_ELBO()
    )
    expected = [svi.step(Y) for _ in range(30)]
    expected_params = _params()

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(model)
    result = fit(
        model,
        guide,
        Y,
        optim=pyro.optim.Adam({"lr": 0.02}),
        start=None,  # the loop of a Pyro user: no warm start
        steps=30,
        tol=None,
        **_quiet(**EAGER),
    )
    assert isinstance(result, FitResult) and result.guide is guide
    assert result.losses == tuple(expected)
    assert result.steps == 30 and not result.converged and not result.interrupted
    assert result.seconds > 0 and result.ms_per_step == pytest.approx(
        1000 * result.seconds / 30
    )
    for name, value in _params().items():
        torch.testing.assert_close(value, expected_params[name], rtol=0, atol=0)


def test_seed_makes_it_reproducible_and_defaults_are_adam_and_trace_elbo():
    # start=None: the plain Adam loop this test is about (see the issue note on
    # a 1e-7 difference once seen between two seeded warm-started fits)
    first = fit(
        model, AutoNormal(model), Y, steps=10, seed=4, start=None, **_quiet()
    ).losses
    pyro.clear_param_store()
    second = fit(
        model, AutoNormal(model), Y, steps=10, seed=4, start=None, **_quiet()
    ).losses
    assert first == second


def test_repr_is_short():
    result = fit(model, AutoNormal(model), Y, steps=3, **_quiet())
    text = repr(result)
    assert "guide=AutoNormal" in text and "<3 losses, last " in text


def quadratic(y):
    """Under AutoDelta the loss is deterministic: it converges exactly."""
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.Normal(x, 1.0), obs=y)


def test_stops_when_the_smoothed_loss_stops_changing():
    result = fit(
        quadratic,
        AutoDelta(quadratic),
        torch.tensor(2.0),
        optim=pyro.optim.Adam({"lr": 0.1}),
        steps=5000,
        tol=1e-6,
        window=20,
        **_quiet(),
    )
    assert result.converged and result.steps < 5000
    assert result.steps % 20 == 0 and result.steps >= 3 * 20  # >= two changes
    x = pyro.get_param_store()["AutoDelta.x"].detach()
    assert float(x) == pytest.approx(1.0, abs=1e-2)  # the posterior mode


def test_tol_none_runs_every_step():
    result = fit(
        quadratic,
        AutoDelta(quadratic),
        torch.tensor(2.0),
        optim=pyro.optim.Adam({"lr": 0.1}),
        steps=200,
        tol=None,
        window=10,
        **_quiet(),
    )
    assert result.steps == 200 and not result.converged


def test_relative_change_of_window_means():
    losses = [10.0] * 5 + [9.0] * 5
    assert convergence._relative_change(losses, 5) == pytest.approx(0.1)
    assert convergence._relative_change([0.0] * 4, 2) == 0.0


def test_progress_bar_shows_the_smoothed_loss(capsys):
    fit(model, AutoNormal(model), Y, steps=20, khat=False, progress=True)
    err = capsys.readouterr().err
    assert "20/20" in err and "loss " in err
    fit(model, AutoNormal(model), Y, steps=20, khat=False, progress=False)
    assert capsys.readouterr().err == ""


def test_reports_the_khat():
    result = fit(model, AutoNormal(model), Y, steps=20, progress=False, khat_samples=60)
    assert isinstance(result.khat, KHat) and result.khat.num_samples == 60
    pyro.clear_param_store()
    result = fit(model, AutoDelta(model), Y, steps=5, progress=False, khat_samples=60)
    assert result.khat.value == math.inf and "point mass" in result.khat.note


def test_a_khat_that_fails_is_a_warning(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no weights today")

    monkeypatch.setattr(fit_module, "psis_khat", broken)
    with pytest.warns(RuntimeWarning, match="k-hat could not be computed: .*today"):
        result = fit(model, AutoNormal(model), Y, steps=5, progress=False)
    assert result.khat is None and result.steps == 5


@pytest.mark.parametrize(
    "make",
    [
        AutoNormalMessenger,
        lambda m: _guide_list(m),
    ],
    ids=["messenger", "guide_list"],
)
def test_other_kinds_of_guide(make):
    result = fit(model, make(model), Y, steps=10, progress=False, khat_samples=50)
    assert result.steps == 10 and all(math.isfinite(x) for x in result.losses)
    assert result.khat is not None


def _guide_list(m):
    guide = AutoGuideList(m)
    guide.append(AutoNormal(poutine.block(m, expose=["mu"])))
    guide.append(AutoNormal(poutine.block(m, expose=["sigma"])))
    return guide


def poisoned(state):
    """A model whose likelihood turns NaN once it has run ``state['at']`` times."""

    def fn(y):
        state["calls"] += 1
        if state["calls"] == state.get("interrupt_at"):
            raise KeyboardInterrupt
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        scale = torch.tensor(float("nan") if state["calls"] > state["at"] else 1.0)
        with pyro.plate("n", len(y)):
            pyro.sample("y", dist.Normal(mu, scale, validate_args=False), obs=y)

    return fn


def _params_after(steps: int) -> dict[str, torch.Tensor]:
    """The params after ``steps`` clean steps from seed 0."""
    pyro.clear_param_store()
    state = {"calls": 0, "at": 10**9}
    fit(
        poisoned(state),
        AutoNormal(poisoned(state)),
        Y,
        steps=steps,
        start=None,
        seed=0,
        **_quiet(**EAGER),
    )
    params = _params()
    pyro.clear_param_store()
    return params


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_nan_loss_names_the_step_and_site_and_keeps_the_params():
    expected = _params_after(4)
    state = {"calls": 0, "at": 5}  # call 1 is the prototype: step k is call k + 1
    fn = poisoned(state)
    with pytest.raises(NonFiniteLossError) as info:
        fit(fn, AutoNormal(fn), Y, steps=50, seed=0, start=None, **_quiet(**EAGER))
    message = str(info.value)
    assert "loss is nan at step 5" in message
    assert "site 'y' in the model has a nan log_prob" in message
    assert "kept as they were after step 4" in message and "smaller learning" in message
    assert info.value.step == 5 and "'y'" in info.value.site
    assert isinstance(info.value, FloatingPointError)
    for name, value in _params().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)
    assert all(p.grad is None for _, p in pyro.get_param_store().named_parameters())


def test_a_non_finite_gradient_is_caught_before_the_update():
    def kinked(y):
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        # sqrt(|x - x|) is 0 with an infinite derivative: the loss stays finite.
        loc = (x - x.detach()).abs().sqrt()
        pyro.sample("y", dist.Normal(loc, 1.0), obs=y)

    guide = AutoDelta(kinked, init_loc_fn=init_to_feasible)  # starts at 0
    with pytest.raises(NonFiniteLossError, match="gradient of parameter 'AutoDelta.x'"):
        fit(kinked, guide, torch.tensor(0.0), steps=5, **_quiet())
    x = pyro.get_param_store()["AutoDelta.x"].detach()
    assert float(x) == 0.0  # the step was never applied


def test_ctrl_c_keeps_what_was_learned():
    expected = _params_after(6)
    state = {"calls": 0, "at": 10**9, "interrupt_at": 8}  # during step 7
    fn = poisoned(state)
    result = fit(
        fn, AutoNormal(fn), Y, steps=50, seed=0, start=None, progress=False, **EAGER
    )
    assert result.interrupted and not result.converged
    assert result.steps == 6 and len(result.losses) == 6 and result.khat is None
    for name, value in _params().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)
    assert all(p.grad is None for _, p in pyro.get_param_store().named_parameters())
    more = fit(fn, result.guide, Y, steps=3, **_quiet())  # and it can go on
    assert more.steps == 3 and not more.interrupted


@pytest.mark.parametrize("engine", ["eager", "recorded"])
def test_ctrl_c_from_a_monkeypatched_step(monkeypatch, engine):
    real_step = Trainer.step

    def step(self, number, args, kwargs):
        if number == 4:
            raise KeyboardInterrupt
        return real_step(self, number, args, kwargs)

    monkeypatch.setattr(Trainer, "step", step)
    result = fit(model, AutoNormal(model), Y, steps=20, progress=False, engine=engine)
    assert result.interrupted and result.steps == 3 and result.khat is None
    assert result.engine == engine


def test_other_errors_say_at_which_step():
    state = {"calls": 0}

    def failing(y):
        state["calls"] += 1
        if state["calls"] > 3:
            raise RuntimeError("model broke")
        model(y)

    with pytest.raises(RuntimeError, match="model broke") as info:
        fit(failing, AutoNormal(failing), Y, steps=10, start=None, **_quiet(**EAGER))
    if hasattr(info.value, "__notes__"):
        assert "(raised by guide_core.fit at step 3)" in info.value.__notes__
    assert all(p.grad is None for _, p in pyro.get_param_store().named_parameters())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"steps": 0}, ValueError, "'steps' must be >= 1: 0"),
        ({"steps": 10.0}, TypeError, "'steps' must be an int such as 2000"),
        ({"window": 0}, ValueError, "'window' must be >= 1: 0"),
        ({"tol": -1.0}, ValueError, "'tol' must be a positive float .* or None"),
        ({"khat_samples": 10}, ValueError, "'khat_samples' must be >= 50: 10"),
        (
            {"optim": torch.optim.Adam},
            TypeError,
            r"Pyro optimizer such as pyro.optim.Adam\(\{'lr': 0.01\}\), not the torch",
        ),
        ({"optim": "adam"}, TypeError, "'optim' must be a Pyro optimizer"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fit(model, AutoNormal(model), Y, progress=False, **kwargs)


def test_model_and_guide_must_be_callable():
    with pytest.raises(TypeError, match="'model' must be a Pyro model"):
        fit("model", AutoNormal(model), Y)
    with pytest.raises(TypeError, match="'guide' must be a guide"):
        fit(model, None, Y)


def test_convergence_step_replays_the_rule_fit_stops_by():
    _doubling = [float(2 ** (i // 50)) for i in range(300)]  # never settles
    pyro.clear_param_store()
    # the loss rule is the one of fits without a warm start
    stopped = fit(
        model,
        AutoNormal(model),
        Y,
        steps=2000,
        tol=0.01,
        seed=3,
        start=None,
        **_quiet(),
    )
    pyro.clear_param_store()
    ran = fit(
        model,
        AutoNormal(model),
        Y,
        steps=2000,
        tol=None,
        seed=3,
        start=None,
        **_quiet(),
    )
    assert stopped.converged and not ran.converged and ran.steps == 2000
    assert stopped.losses == ran.losses[: stopped.steps]
    at = fit_module.convergence_step(ran.losses, tol=0.01, window=50, steps=2000)
    assert at == stopped.steps
    assert fit_module.convergence_step(_doubling, tol=0.01, window=50) is None
    assert fit_module.convergence_step([], tol=0.01) is None
    assert fit_module.convergence_step([1.0, 2.0] * 100, tol=0.01, window=50) == 150
