"""fit's engines: eager, recorded and compiled give eager's steps, or say why not."""

from __future__ import annotations

import copy
import math
import random
import warnings

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import (
    SVI,
    JitTrace_ELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
    config_enumerate,
)
from pyro.ops.indexing import Vindex

import guide_core
from guide_core import (
    AutoDelta,
    AutoMultivariateNormal,
    AutoNormal,
    AutoNormalMessenger,
    NonFiniteLossError,
    fit,
)
from guide_core.cli import main
from guide_core.core.seeded import first_mismatch, run_seeded
from guide_core.workflow.engines import (
    Costs,
    Parts,
    Settings,
    Trainer,
    make_trainer,
    recording,
)
from guide_core.workflow.engines.eager import eager_loss_and_grads, zero_all_grads
from guide_core.workflow.engines.losses import recordable_loss
from guide_core.workflow.engines.optim import map_optimizer
from guide_core.workflow.engines.program import record

Y = torch.tensor([0.5, 1.0, 1.5, 0.2, 1.1, 0.8, -0.3, 0.9])


def model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("n", len(y)):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


def subsampled(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("n", len(y), subsample_size=3) as ind:
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y[ind])


def reads_a_value(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    if mu.item() > 100.0:  # data-dependent control flow
        mu = mu * 2
    with pyro.plate("n", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def _quiet(**kwargs):
    return {"progress": False, "khat": False, **kwargs}


def _guide_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "guide_core.fit" in str(w.message)]


def _first_step_params(model, guide, elbo, *args):
    """Run one eager step (the guide sets up); return its params by name."""
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), elbo)
    _, params = eager_loss_and_grads(svi, args, {})
    zero_all_grads(params)
    return svi, params


def _program_vs_eager(model, guide, elbo, *args, seed=3):
    svi, params = _first_step_params(model, guide, elbo, *args)
    program, _ = run_seeded(
        lambda: record(
            recordable_loss(elbo), model, guide, list(params.items()), args, {}
        ),
        0,
    )
    leaves = list(params.values())

    def eager():
        loss, _ = eager_loss_and_grads(svi, args, {})
        grads = [p.grad.clone() if p.grad is not None else None for p in leaves]
        zero_all_grads(params)
        return loss, grads

    want_loss, want = run_seeded(eager, seed)
    got_loss, got = run_seeded(lambda: program(leaves, list(args)), seed)
    return program, leaves, want_loss, want, got_loss, got, list(params)


GUIDES = {
    "normal": AutoNormal,
    "delta": AutoDelta,
    "mvn": AutoMultivariateNormal,
    "messenger": AutoNormalMessenger,
}
ELBOS = {
    "trace": lambda: Trace_ELBO(),
    "mean_field": lambda: TraceMeanField_ELBO(),
    "tracegraph": lambda: TraceGraph_ELBO(),
    "particles": lambda: Trace_ELBO(num_particles=3),
    "vectorized": lambda: Trace_ELBO(
        num_particles=4, vectorize_particles=True, max_plate_nesting=1
    ),
}


@pytest.mark.parametrize("elbo", list(ELBOS))
@pytest.mark.parametrize("guide", list(GUIDES))
def test_recorded_step_is_eager_at_the_same_draws(guide, elbo):
    if guide == "messenger" and elbo == "mean_field":
        pytest.skip("AutoNormalMessenger's sites are not a mean-field pair")
    _, _, want_loss, want, got_loss, got, names = _program_vs_eager(
        model, GUIDES[guide](model), ELBOS[elbo](), Y
    )
    assert float(got_loss) == pytest.approx(want_loss, rel=1e-5)
    assert first_mismatch(want, got, names) is None


def _assert_recorded_follows_eager(model, make_guide, steps, optim_fn=None, **kw):
    """Fit eager, then recorded, from the same seed: same losses and params."""

    def run(engine):
        pyro.clear_param_store()
        extra = {} if optim_fn is None else {"optim": optim_fn()}
        result = fit(
            model, make_guide(), Y, steps=steps, tol=None, seed=0, engine=engine,
            **_quiet(**extra, **kw),
        )  # fmt: skip
        params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
        return result, params

    (eager, want), (recorded, got) = run("eager"), run("recorded")
    assert recorded.engine == "recorded", recorded.engine_reason
    torch.testing.assert_close(
        torch.tensor(recorded.losses), torch.tensor(eager.losses), rtol=1e-4, atol=1e-4
    )
    assert set(got) == set(want)
    for name, value in got.items():
        torch.testing.assert_close(value, want[name], rtol=1e-4, atol=1e-5)


@config_enumerate
def mixture(y):
    weight = pyro.sample("weight", dist.Beta(2.0, 2.0))
    locs = pyro.sample("locs", dist.Normal(torch.tensor([-1.0, 1.0]), 2.0).to_event(1))
    with pyro.plate("n", len(y)):
        z = pyro.sample("z", dist.Bernoulli(weight))
        pyro.sample("y", dist.Normal(Vindex(locs)[..., z.long()], 1.0), obs=y)


ENUM_ELBOS = {
    "one": lambda: TraceEnum_ELBO(max_plate_nesting=1),
    "particles": lambda: TraceEnum_ELBO(max_plate_nesting=1, num_particles=2),
    "vectorized": lambda: TraceEnum_ELBO(
        max_plate_nesting=1, num_particles=3, vectorize_particles=True
    ),
}


@pytest.mark.parametrize("elbo", list(ENUM_ELBOS))
def test_enumerated_model_sites_record_and_match_pyros_trace_enum(elbo):
    guide = AutoNormal(poutine.block(mixture, hide=["z"]))
    _, _, want_loss, want, got_loss, got, names = _program_vs_eager(
        mixture, guide, ENUM_ELBOS[elbo](), Y
    )
    assert float(got_loss) == pytest.approx(want_loss, rel=1e-5)
    assert first_mismatch(want, got, names) is None


def test_a_recorded_fit_with_enumeration_follows_the_eager_fit():
    _assert_recorded_follows_eager(
        mixture,
        lambda: AutoNormal(poutine.block(mixture, hide=["z"])),
        steps=20,
        loss=TraceEnum_ELBO(max_plate_nesting=1),
    )


def test_an_enumerated_guide_site_runs_eager_with_the_reason():
    def enumerated_guide(y):
        p = pyro.param("p", torch.tensor(0.5), constraint=constraints.unit_interval)
        pyro.sample("weight", dist.Delta(p))
        pyro.sample("locs", dist.Delta(torch.zeros(2)).to_event(1))
        with pyro.plate("n", len(y)):
            pyro.sample("z", dist.Bernoulli(p), infer={"enumerate": "parallel"})

    with pytest.warns(RuntimeWarning, match="guide site 'z' is enumerated"):
        result = fit(
            mixture,
            enumerated_guide,
            Y,
            steps=3,
            engine="recorded",
            **_quiet(loss=TraceEnum_ELBO(max_plate_nesting=1)),
        )
    assert result.engine == "eager"


def test_replays_draw_afresh_and_subsample_indices_are_fresh():
    program, leaves, want_loss, want, got_loss, got, names = _program_vs_eager(
        subsampled, AutoNormal(subsampled), Trace_ELBO(), torch.arange(20.0)
    )
    assert "randperm" in program.graph.code  # indices drawn in the program
    assert float(got_loss) == pytest.approx(want_loss, rel=1e-5)
    assert first_mismatch(want, got, names) is None
    losses = {float(program(leaves, [torch.arange(20.0)])[0]) for _ in range(5)}
    assert len(losses) == 5


def test_a_subsampled_fit_records_and_follows_eager():
    data = torch.randn(50, generator=torch.Generator().manual_seed(1)) + 2.0
    eager = fit(
        subsampled,
        AutoNormal(subsampled),
        data,
        steps=30,
        tol=None,
        seed=0,
        engine="eager",
        **_quiet(),
    )
    pyro.clear_param_store()
    recorded = fit(
        subsampled,
        AutoNormal(subsampled),
        data,
        steps=30,
        tol=None,
        seed=0,
        engine="recorded",
        **_quiet(),
    )
    assert recorded.engine == "recorded" and eager.engine == "eager"
    torch.testing.assert_close(
        torch.tensor(recorded.losses), torch.tensor(eager.losses), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize(
    "optim",
    [
        lambda: pyro.optim.Adam(
            {"lr": 0.05, "betas": (0.8, 0.99), "weight_decay": 0.1}
        ),
        lambda: pyro.optim.ClippedAdam({"lr": 0.05, "clip_norm": 0.5, "lrd": 0.99}),
        lambda: pyro.optim.SGD({"lr": 0.01, "momentum": 0.9}),
        lambda: pyro.optim.Adam({"lr": 0.05}, {"clip_norm": 0.3}),
        lambda: pyro.optim.Adam(lambda name: {"lr": 0.1 if "loc" in name else 0.01}),
    ],
    ids=["adam", "clipped_adam", "sgd", "clip_args", "per_param"],
)
def test_a_recorded_fit_follows_the_eager_fit(optim):
    _assert_recorded_follows_eager(
        model, lambda: AutoNormal(model), steps=25, optim_fn=optim
    )


def test_per_param_optim_args_become_groups_with_pyros_settings():
    guide = AutoNormal(model)
    _, params = _first_step_params(model, guide, Trace_ELBO(), Y)
    mapped = map_optimizer(
        pyro.optim.Adam(lambda name: {"lr": 0.1 if "loc" in name else 0.01})
    )
    mapped.add(params.values())
    groups = mapped.torch_optimizer.param_groups
    assert sorted(g["lr"] for g in groups) == [0.01, 0.1]
    assert all(g["fused"] for g in groups)  # Adam's one kernel, every group
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    assert by_lr[0.1] == {id(p) for n, p in params.items() if "loc" in n}


@pytest.mark.parametrize(
    "optim",
    [
        lambda: pyro.optim.Adam({"lr": 0.05, "betas": (0.8, 0.9), "weight_decay": 0.1}),
        lambda: pyro.optim.AdamW({"lr": 0.05, "amsgrad": True}),
        lambda: pyro.optim.SGD({"lr": 0.01, "momentum": 0.9}),
    ],
)
def test_the_one_optimizer_is_pyros_per_param_update(optim):
    """Bit for bit with multi-tensor kernels; to rounding with Adam's fused one."""
    torch.manual_seed(0)
    shapes = [(), (3,), (2, 2)]
    mine = [torch.randn(s, requires_grad=True) for s in shapes]
    pyros = [p.detach().clone().requires_grad_() for p in mine]
    mapped, reference = map_optimizer(optim()), optim()
    for _ in range(30):
        grads = [torch.randn(s) for s in shapes]
        for p, q, g in zip(mine, pyros, grads):
            p.grad, q.grad = g.clone(), g.clone()
        mapped.step(mine)
        reference(pyros)
        for q in pyros:
            q.grad = None
    fused = mapped.torch_optimizer.defaults.get("fused")
    for p, q in zip(mine, pyros):
        if fused:
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
        else:
            assert torch.equal(p, q)


@pytest.mark.parametrize(
    "settings",
    [
        {"lr": 0.05},
        {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1, "maximize": True},
        {"lr": 0.02, "betas": (0.7, 0.8), "eps": 1e-6, "decoupled_weight_decay": True},
    ],
)
def test_the_direct_fused_call_is_torchs_fused_step_bit_for_bit(settings):
    from guide_core.workflow.engines.fused_adam import DirectFusedAdam

    torch.manual_seed(0)
    shapes = [(), (3,), (2, 2)]
    mine = [torch.randn(s, requires_grad=True) for s in shapes]
    theirs = [p.detach().clone().requires_grad_() for p in mine]
    split = [{"params": mine[:1], "lr": 0.1}, {"params": mine[1:]}]
    opt = torch.optim.Adam(split, fused=True, **settings)
    ref = torch.optim.Adam(
        [{"params": theirs[:1], "lr": 0.1}, {"params": theirs[1:]}],
        fused=True,
        **settings,
    )
    direct, used = None, 0
    for step in range(12):
        grads = [torch.randn(s) for s in shapes]
        for p, q, g in zip(mine, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        if step == 5:  # a param without a gradient: the full step skips it
            mine[1].grad = theirs[1].grad = None
        if step == 8:  # reloaded state: the cached lists are stale
            opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        if direct is not None and direct.step():
            used += 1
        else:
            opt.step()
            direct = DirectFusedAdam.of(opt)
        ref.step()
    assert used == 9  # all but the first, the gradless and the reloaded step
    for p, q in zip(mine, theirs):
        assert torch.equal(p, q)
    for a, b in zip(opt.state.values(), ref.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in b)


def _recorded_trainer(model, guide) -> Trainer:
    """A trainer on the recorded engine, with Pyro's Adam at lr 0.01."""
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    return Trainer(
        Parts.of(svi),
        Settings(mode="recorded", steps=10),
        loss_fn=recordable_loss(Trace_ELBO()),
        optimizer=map_optimizer(pyro.optim.Adam({"lr": 0.01})),
    )


def test_a_shape_change_records_again():
    guide = AutoNormal(model)
    trainer = _recorded_trainer(model, guide)
    for number in range(1, 4):
        trainer.step(number, (Y,), {})
    assert len(trainer.state.programs) == 1
    trainer.step(4, (torch.cat([Y, Y]),), {})
    trainer.step(5, (torch.cat([Y, Y]),), {})
    assert len(trainer.state.programs) == 2 and trainer.engine == "recorded"
    trainer.step(6, (Y.double(),), {})  # a dtype is part of the signature too
    assert len(trainer.state.programs) == 3


def test_new_values_inside_a_container_record_again():
    def listed(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("n", len(data[0])):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=data[0])

    guide = AutoNormal(listed)
    trainer = _recorded_trainer(listed, guide)
    for number in range(1, 3):
        trainer.step(number, ([Y],), {})
    # a tensor nested in a list is a constant of the program, not an input:
    # the same shape with other values must not replay the old program
    loss = trainer.step(3, ([Y + 100.0],), {})
    assert len(trainer.state.programs) == 2 and loss > 1e4


def test_other_strides_record_again():
    guide = AutoNormal(model)
    trainer = _recorded_trainer(model, guide)
    for number in range(1, 3):
        trainer.step(number, (Y,), {})
    strided = torch.stack([Y, Y], -1)[:, 0]  # same shape and values, stride 2
    trainer.step(3, (strided,), {})
    assert len(trainer.state.programs) == 2 and trainer.engine == "recorded"


def test_a_replaced_param_is_found_again():
    guide = AutoNormal(model)
    result = fit(model, guide, Y, steps=5, tol=None, engine="recorded", **_quiet())
    assert result.engine == "recorded"
    store = pyro.get_param_store()
    name = "AutoNormal.locs.mu"
    value = store[name].detach().clone()
    store._params[name] = torch.nn.Parameter(value)  # another tensor, same name
    again = fit(model, guide, Y, steps=5, tol=None, engine="recorded", **_quiet())
    assert again.engine == "recorded" and len(again.losses) == 5


def test_a_model_that_reads_values_runs_eager_with_one_warning_naming_the_line():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(
            reads_a_value,
            AutoNormal(reads_a_value),
            Y,
            steps=10,
            engine="recorded",
            **_quiet(),
        )
    messages = _guide_warnings(caught)
    assert len(messages) == 1, messages
    assert "test_engines.py:" in messages[0] and "mu.item()" in messages[0]
    assert "reads a tensor's value" in messages[0]
    assert result.engine == "eager" and "mu.item()" in result.engine_reason
    assert len(result.losses) == 10 and all(map(math.isfinite, result.losses))


def test_auto_falls_back_on_a_value_read_too():
    elbo = Trace_ELBO()
    guide = AutoNormal(reads_a_value)
    svi = SVI(reads_a_value, guide, pyro.optim.Adam({"lr": 0.01}), elbo)
    settings = Settings(steps=1000, costs=Costs(record_seconds=0.0))
    trainer = make_trainer("auto", svi, elbo, settings)
    with pytest.warns(RuntimeWarning, match="runs eager: the step cannot be recorded"):
        for number in range(1, 5):
            trainer.step(number, (Y,), {})
    assert trainer.engine == "eager" and "mu.item()" in trainer.reason


@pytest.mark.parametrize(
    "kwargs, why",
    [
        ({"loss": JitTrace_ELBO()}, "JitTrace_ELBO is not"),
        ({"optim": pyro.optim.Adagrad({"lr": 0.1})}, None),
        ({"optim": pyro.optim.DCTAdam({"lr": 0.01})}, "DCTAdam has no exact"),
        (
            {
                "optim": pyro.optim.ExponentialLR(
                    {
                        "optimizer": torch.optim.Adam,
                        "optim_args": {"lr": 0.01},
                        "gamma": 0.9,
                    }
                )
            },
            "learning-rate scheduler",
        ),
    ],
    ids=["jit", "adagrad", "dct_adam", "scheduler"],
)
def test_what_cannot_be_recorded_runs_eager_with_the_reason(kwargs, why):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(
            model, AutoNormal(model), Y, steps=4, engine="recorded", **_quiet(**kwargs)
        )
    if why is None:
        assert result.engine == "recorded" and not _guide_warnings(caught)
        return
    assert result.engine == "eager" and why in result.engine_reason
    assert len(_guide_warnings(caught)) == 1
    pyro.clear_param_store()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # auto chooses silently
        result = fit(model, AutoNormal(model), Y, steps=4, **_quiet(**kwargs))
    assert result.engine == "eager" and why in result.engine_reason


def test_a_score_function_guide_runs_eager_naming_the_site():
    def coin(y):
        p = pyro.sample("p", dist.Beta(2.0, 2.0))
        with pyro.plate("n", len(y)):
            pyro.sample("y", dist.Bernoulli(p), obs=y)

    def guide(y):
        a = pyro.param(
            "a", torch.tensor(0.5), constraint=dist.constraints.unit_interval
        )
        pyro.sample(
            "p",
            dist.Beta(a * 4, 2.0).with_rsample(False)
            if hasattr(dist.Beta, "with_rsample")
            else _NoRsampleBeta(a * 4, 2.0),
        )

    with pytest.warns(RuntimeWarning, match="guide site 'p' is not reparameterized"):
        result = fit(
            coin,
            guide,
            torch.tensor([1.0, 0.0, 1.0]),
            steps=4,
            engine="recorded",
            **_quiet(),
        )
    assert result.engine == "eager"


class _NoRsampleBeta(dist.Beta):
    has_rsample = False

    def rsample(self, sample_shape=torch.Size()):  # noqa: B008
        raise NotImplementedError

    def sample(self, sample_shape=torch.Size()):  # noqa: B008
        with torch.no_grad():
            return super().rsample(sample_shape)


def test_check_every_catches_a_model_that_changes_behind_the_recording():
    state = {"calls": 0}

    def drifting(y):
        state["calls"] += 1
        # Python state, not replayed: calls 1-5 are the set-up, step 1, the
        # recording and its two checks; call 6 the check at step 5 (agrees),
        # call 7 the check at step 10 (differs).
        scale = 1.0 if state["calls"] < 7 else 3.0
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("n", len(y)):
            pyro.sample("y", dist.Normal(mu, scale), obs=y)

    with pytest.warns(RuntimeWarning, match="differs from eager"):
        result = fit(
            drifting,
            AutoNormal(drifting),
            Y,
            steps=30,
            tol=None,
            engine="recorded",
            check_every=5,
            start=None,  # the model calls are counted; Pathfinder would add some
            **_quiet(),
        )
    assert result.engine == "eager" and "differs from eager" in result.engine_reason
    assert len(result.losses) == 30


def test_the_finite_check_screens_by_sums_and_is_exact():
    from guide_core.workflow.engines.eager import BadStep, check_finite

    big = torch.full((4,), 3e38)  # finite, but its sum overflows to inf
    check_finite(1, 0.5, {"a": big, "b": None})
    for bad in (float("inf"), float("nan")):
        grad = torch.zeros(3)
        grad[1] = bad
        with pytest.raises(BadStep, match="parameter 'b' is not finite"):
            check_finite(2, 0.5, {"a": big, "b": grad})
    with pytest.raises(BadStep, match="loss is nan"):
        check_finite(3, float("nan"), {"a": big})


def test_nan_stop_on_the_recorded_engine():
    def blows_up(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        scale = torch.where(mu > 2.0, torch.tensor(float("nan")), torch.tensor(1.0))
        with pyro.plate("n", len(y)):
            pyro.sample("y", dist.Normal(mu, scale, validate_args=False), obs=y)

    data = torch.full((5,), 6.0)
    errors = {}
    for engine in ("eager", "recorded"):
        pyro.clear_param_store()
        with pytest.raises(NonFiniteLossError) as info:
            fit(
                blows_up,
                AutoDelta(blows_up),
                data,
                optim=pyro.optim.SGD({"lr": 0.01}),
                steps=200,
                seed=0,
                engine=engine,
                **_quiet(),
            )
        errors[engine] = (info.value.step, dict(pyro.get_param_store().items()))
        assert all(p.grad is None for _, p in pyro.get_param_store().named_parameters())
    assert errors["recorded"][0] == errors["eager"][0] > 2
    for name, value in errors["eager"][1].items():
        torch.testing.assert_close(errors["recorded"][1][name], value)


def _conjugate(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("n", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def _check_conjugate_posterior(engine: str, steps: int) -> None:
    y = torch.randn(9, generator=torch.Generator().manual_seed(5)) + 1.0
    n = len(y)
    post_mean, post_sd = float(y.sum()) / (n + 1), (1.0 / (n + 1)) ** 0.5
    guide = AutoNormal(_conjugate)
    result = fit(
        _conjugate,
        guide,
        y,
        optim=pyro.optim.Adam({"lr": 0.02}),
        loss=TraceMeanField_ELBO(num_particles=4),
        steps=steps,
        tol=None,
        seed=0,
        engine=engine,
        **_quiet(),
    )
    assert result.engine == engine, result.engine_reason
    store = pyro.get_param_store()
    assert float(store["AutoNormal.locs.mu"]) == pytest.approx(post_mean, abs=0.04)
    assert float(store["AutoNormal.scales.mu"]) == pytest.approx(post_sd, rel=0.1)


def test_recorded_recovers_a_conjugate_posterior():
    _check_conjugate_posterior("recorded", 1500)


def test_save_and_load_after_a_recorded_fit(tmp_path):
    guide = AutoNormal(model)
    result = fit(model, guide, Y, steps=40, tol=None, engine="recorded", **_quiet())
    assert result.engine == "recorded"
    median = {k: v.detach().clone() for k, v in guide.median(Y).items()}
    path = tmp_path / "guide.pt"
    guide_core.save(guide, path)
    pyro.clear_param_store()
    loaded = guide_core.load(path, model, model_args=(Y,))
    for name, value in loaded.median(Y).items():
        torch.testing.assert_close(value.detach(), median[name])


def test_engine_must_be_known():
    with pytest.raises(ValueError, match="'engine' must be one of 'auto', 'eager'"):
        fit(model, AutoNormal(model), Y, engine="fast", **_quiet())
    with pytest.raises(ValueError, match="'check_every' must be >= 1"):
        fit(model, AutoNormal(model), Y, check_every=0, **_quiet())


def _auto_trainer(steps: int, costs: Costs) -> Trainer:
    elbo = Trace_ELBO()
    svi = SVI(model, AutoNormal(model), pyro.optim.Adam({"lr": 0.01}), elbo)
    return make_trainer("auto", svi, elbo, Settings(steps=steps, costs=costs))


def test_auto_records_and_compiles_only_when_the_steps_pay_for_it():
    pays, why = Costs(compile_seconds=60.0).compile_pays_off(1000, 1.0)
    assert not pays and "to compile (given" in why
    assert Costs(compile_seconds=60.0).compile_pays_off(10**7, 1.0)[0]
    pays, why = Costs(record_seconds=1.0).record_pays_off(100, 5.0)
    assert not pays and "0.3 s to save <= 1 s to record (given" in why
    # a short fit stays eager, saying why
    result = fit(model, AutoNormal(model), Y, steps=10, tol=None, **_quiet())
    assert result.engine == "eager" and "auto: not recorded:" in result.engine_reason
    # one the planned steps pay for records (and does not compile)
    trainer = _auto_trainer(30, Costs(record_seconds=0.0, compile_seconds=1e9))
    for number in range(1, 6):
        trainer.step(number, (Y,), {})
        assert trainer.engine == ("eager" if number <= 2 else "recorded")
    assert "auto: recorded: " in trainer.reason and "to compile" in trainer.reason


def test_the_cli_takes_an_engine(capsys):
    code = main(
        [
            "fit",
            "--engine",
            "recorded",
            "--steps",
            "20",
            "--quiet",
            "--no-khat",
            "--num-samples",
            "50",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "engine recorded (asked for)" in out
    code = main(
        [
            "compare",
            "--engine",
            "eager",
            "--steps",
            "10",
            "--no-khat",
            "--guides",
            "auto_normal,auto_delta",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "engine" in out.splitlines()[1] and out.count("eager") >= 2


@pytest.mark.slow
@pytest.mark.parametrize("elbo", ["trace", "vectorized"])
def test_compiled_step_is_eager_at_the_same_draws(elbo):
    result = fit(
        model,
        AutoNormal(model),
        Y,
        steps=5,
        tol=None,
        loss=ELBOS[elbo](),
        engine="compiled",
        **_quiet(),
    )
    assert result.engine == "compiled", result.engine_reason


@pytest.mark.slow
def test_compiled_recovers_a_conjugate_posterior():
    _check_conjugate_posterior("compiled", 1500)


def test_a_compiled_step_no_faster_than_the_recorded_runs_recorded(monkeypatch):
    from guide_core.workflow.engines.program import StepProgram

    times = iter([1.0, 5.0, 5.0, 1.0])  # recorded, compiled, then both again
    monkeypatch.setattr(recording, "time_replays", lambda t, p, calls=3: next(times))
    monkeypatch.setattr(StepProgram, "compile", lambda self: None)  # no inductor
    result = fit(
        model, AutoNormal(model), Y, steps=5, tol=None, engine="compiled", **_quiet()
    )
    assert result.engine == "recorded"
    assert "compiled step (5 ms) is not faster than the recorded one (1 ms)" in (
        result.engine_reason
    )


def test_a_guide_without_params_runs_eager_and_says_so():
    def prior_guide(y):
        pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.sample("sigma", dist.LogNormal(0.0, 1.0))

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = fit(model, prior_guide, Y, steps=3, engine="recorded", **_quiet())
    assert result.engine == "eager" and "no params" in result.engine_reason


def test_a_draw_baked_into_the_program_is_caught_by_the_check():
    rng = random.Random(0)

    def python_noise(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        shift = rng.gauss(0.0, 1.0)  # drawn in Python: a constant of the program
        with pyro.plate("n", len(y)):
            pyro.sample("y", dist.Normal(mu + shift, 1.0), obs=y)

    with pytest.warns(RuntimeWarning, match="recorded step differs from eager"):
        result = fit(
            python_noise,
            AutoNormal(python_noise),
            Y,
            steps=5,
            engine="recorded",
            **_quiet(),
        )
    assert result.engine == "eager" and "the loss differs" in result.engine_reason


@pytest.mark.slow
def test_auto_compiles_when_the_steps_pay_for_it():
    trainer = _auto_trainer(50, Costs(record_seconds=0.0, compile_seconds=1e-3))
    for number in range(1, 6):
        trainer.step(number, (Y,), {})
    assert trainer.engine == "compiled", trainer.reason
    assert "to save >" in trainer.reason and "to compile (given" in trainer.reason
