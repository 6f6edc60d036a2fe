"""AutoDelta: differential tests against pyro.infer.autoguide.AutoDelta."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.infer.autoguide as oracle
import pytest
import torch
from oracle import (
    DATA,
    MODELS,
    assert_same_runs,
    run_svi,
    scalar_model,
    subsample_model,
    subsample_plates,
)
from pyro import poutine
from pyro.infer import JitTrace_ELBO, Predictive, TraceEnum_ELBO, TraceMeanField_ELBO

import guide_core
from guide_core import AutoGuideList, init_to_value

AutoDelta = guide_core.AutoDelta


@pytest.mark.parametrize("name", sorted(MODELS))
def test_matches_pyro_parameters_losses_and_median(name):
    model = MODELS[name]
    ours = run_svi(AutoDelta, model, DATA, levels=None)
    pyros = run_svi(oracle.AutoDelta, model, DATA, levels=None)
    assert_same_runs(ours, pyros)


@pytest.mark.parametrize(
    "elbo",
    [TraceMeanField_ELBO, lambda: TraceEnum_ELBO(max_plate_nesting=2), JitTrace_ELBO],
    ids=["meanfield", "traceenum", "jit"],
)
def test_matches_pyro_under_other_elbos(elbo):
    model = MODELS["plated"]
    ours = run_svi(AutoDelta, model, DATA, elbo=elbo(), steps=10, levels=None)
    pyros = run_svi(oracle.AutoDelta, model, DATA, elbo=elbo(), steps=10, levels=None)
    assert_same_runs(ours, pyros)


def test_quantiles_are_the_point_at_every_level():
    guide = AutoDelta(MODELS["constrained"])
    median = guide.median(DATA)
    q = guide.quantiles([0.05, 0.5, 0.95], DATA)
    for name, value in median.items():
        assert q[name].shape == (3,) + value.shape
        assert all(torch.equal(q[name][i], value) for i in range(3))


def test_map_is_found_in_the_constrained_space():
    def model():
        pyro.sample("s", dist.Gamma(3.0, 1.0))  # mode (3 - 1) / 1 = 2

    guide = AutoDelta(model)
    svi = pyro.infer.SVI(
        model, guide, pyro.optim.Adam({"lr": 0.05}), TraceMeanField_ELBO()
    )
    for _ in range(400):
        svi.step()
    assert guide.median()["s"].item() == pytest.approx(2.0, abs=0.02)


def test_sites_and_param_names_are_pyros():
    model = MODELS["constrained"]
    ours = poutine.trace(AutoDelta(model)).get_trace(DATA)
    theirs = poutine.trace(oracle.AutoDelta(model)).get_trace(DATA)
    assert list(ours.stochastic_nodes) == list(theirs.stochastic_nodes)
    for name in theirs.stochastic_nodes:
        assert type(ours.nodes[name]["fn"]) is type(theirs.nodes[name]["fn"])
    names = {k for k in pyro.get_param_store().keys()}
    assert "AutoDelta.scale" in names and "AutoDelta.probs" in names


def test_works_with_predictive_and_in_a_guide_list():
    model = MODELS["plated"]
    guide = AutoDelta(model)
    guide(DATA)
    samples = Predictive(model, guide=guide, num_samples=4)(DATA)
    assert samples["mu"].shape == (4, 2, 1)
    parts = AutoGuideList(model)
    parts.append(AutoDelta(poutine.block(model, expose=["tau"])))
    parts.append(guide_core.AutoNormal(poutine.block(model, hide=["tau"])))
    assert set(parts(DATA)) == {"tau", "mu"}


def test_state_dict_loads_into_a_fresh_guide_and_into_pyros():
    model = MODELS["constrained"]
    trained = run_svi(AutoDelta, model, DATA, steps=15, levels=None)
    state = {k: v.clone() for k, v in trained.guide.state_dict().items()}
    pyro.clear_param_store()
    fresh = AutoDelta(model)
    fresh.load_state_dict(state)
    for name, value in fresh.median(DATA).items():
        torch.testing.assert_close(value, trained.median[name])
    pyro.clear_param_store()
    theirs = oracle.AutoDelta(model)
    theirs(DATA)
    theirs.load_state_dict(state)
    for name, value in theirs.median(DATA).items():
        torch.testing.assert_close(value, trained.median[name])


def test_create_plates_subsampling_matches_pyro():
    data, model, create_plates = torch.randn(8), subsample_model, subsample_plates
    ours = run_svi(lambda m: AutoDelta(m, create_plates=create_plates), model, data)
    pyros = run_svi(
        lambda m: oracle.AutoDelta(m, create_plates=create_plates),
        model,
        data,
        levels=None,
    )
    # Pyro's median is of a random subsample; ours covers the whole plate.
    assert_same_runs(ours, pyros, skip_median=("x",))
    assert ours.guide.x.shape == (8,) and ours.median["x"].shape == (8,)


def test_discrete_site_is_an_error_naming_the_site():
    def model():
        pyro.sample("k", dist.Bernoulli(0.5))

    with pytest.raises(ValueError, match="discrete.*'k'|'k'.*discrete"):
        AutoDelta(model)()


def test_init_value_outside_the_support_is_an_error_naming_the_site():
    init = init_to_value(values={"loc": torch.tensor(float("nan"))})
    with pytest.raises(ValueError, match="outside the support of site 'loc'"):
        AutoDelta(scalar_model, init_loc_fn=init)(DATA)
