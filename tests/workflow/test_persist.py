"""guide_core.save / guide_core.load: one file, no warm-up call, exact medians,
and a clear refusal for another guide, another model or a newer format."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from oracle import DATA, constrained_model, subsample_model, subsample_plates
from pyro import poutine

import guide_core
from guide_core import AutoDelta, AutoGuideList, AutoNormal, load, registry, save
from guide_core.workflow.persist.save_load import (
    FORMAT_VERSION,
    GUIDE_CORE_FORMAT,
    FormatVersionError,
    LoadError,
    SaveError,
    WrongGuideError,
    WrongModelError,
)


def model(data):
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(a, b), obs=data)


def other_model(data):
    a = pyro.sample("a", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    c = pyro.sample("c", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(a.sum(), c), obs=data)


def train(guide, model=model, *args, steps=15):
    args = args or (DATA,)
    svi = pyro.infer.SVI(
        model, guide, pyro.optim.Adam({"lr": 0.05}), pyro.infer.Trace_ELBO()
    )
    for _ in range(steps):
        svi.step(*args)
    return guide


def assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def round_trip(guide, path, model=model, *args, **load_kwargs):
    """Save, forget every parameter, load; return the loaded guide."""
    save(guide, path)
    pyro.clear_param_store()
    return load(path, model, **load_kwargs)


class MyNormal(AutoNormal):
    """A guide class no plugin registers: found again by its import path."""


# -- round trips ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["auto_normal", "auto_delta"])
def test_round_trip_reproduces_median_without_warm_up(tmp_path, name):
    guide = train(registry.make(name, model, init_loc_fn="median"))
    median = guide.median()
    loaded = round_trip(guide, tmp_path / "g.pt")
    assert type(loaded) is type(guide)
    assert loaded.prototype_trace is None  # never called ...
    assert_same(loaded.median(DATA), median)  # ... and exact at the first call
    assert loaded.init_loc_fn is registry.init_strategy("median")


def test_loaded_guide_gives_the_same_loss(tmp_path):
    guide = train(AutoNormal(model, init_scale=0.05))
    loaded = round_trip(guide, tmp_path / "g.pt", model_args=(DATA,))
    elbo = pyro.infer.Trace_ELBO()
    pyro.set_rng_seed(3)
    theirs = elbo.loss(model, loaded, DATA)
    pyro.set_rng_seed(3)
    ours = elbo.loss(model, guide, DATA)
    assert ours == theirs


def test_model_args_set_the_guide_up_at_load(tmp_path):
    guide = train(AutoNormal(model))
    loaded = round_trip(guide, tmp_path / "g.pt", model_args=(DATA,))
    assert loaded.prototype_trace is not None
    assert_same(loaded.median(), guide.median())


def test_round_trip_constrained_sites_and_strategy_options(tmp_path):
    strategy = guide_core.init_to_median(num_samples=7)
    guide = train(
        AutoNormal(constrained_model, init_loc_fn=strategy), constrained_model
    )
    loaded = round_trip(guide, tmp_path / "g.pt", constrained_model)
    assert_same(loaded.median(DATA), guide.median())
    assert loaded.init_loc_fn.keywords["num_samples"] == 7


def test_round_trip_of_a_guide_list(tmp_path):
    guide = AutoGuideList(model)
    guide.append(AutoNormal(poutine.block(model, hide=["b"]), init_scale=0.02))
    guide.append(AutoDelta(poutine.block(model, expose=["b"])))
    train(guide)
    loaded = round_trip(guide, tmp_path / "g.pt")
    assert [type(p) for p in loaded] == [AutoNormal, AutoDelta]
    assert_same(loaded.median(DATA), guide.median())
    assert loaded[0]._init_scale == 0.02
    pyro.set_rng_seed(1)
    ours = loaded(DATA)
    assert set(ours) == {"a", "b"}


def test_round_trip_of_a_subsampled_plate(tmp_path):
    data = torch.randn(8)
    guide = AutoNormal(subsample_model, create_plates=subsample_plates)
    train(guide, subsample_model, data)
    path = tmp_path / "g.pt"
    save(guide, path, omit=["create_plates"])
    stored = torch.load(path, weights_only=True)["guide"]["sites"]
    assert stored["x"]["shape"] == [8]  # the full plate, not the subsample
    pyro.clear_param_store()
    loaded = load(path, subsample_model, create_plates=subsample_plates)
    assert loaded.create_plates is subsample_plates
    assert_same(loaded.median(data), guide.median())


def test_round_trip_of_a_messenger_guide(tmp_path):
    if "auto_normal_messenger" not in registry.names():
        pytest.skip("the messengers plugin is not installed")
    guide = train(registry.make("auto_normal_messenger", model))
    loaded = round_trip(guide, tmp_path / "g.pt")
    assert_same(loaded.median(DATA), guide.median(DATA))


def vector_model(data):
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.LogNormal(0.0, 1.0).expand([2]).to_event(1))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(a, b.sum()), obs=data)


FAMILIES = [
    "auto_diagonal_normal",
    "auto_multivariate_normal",
    "auto_low_rank_multivariate_normal",
    "auto_laplace_approximation",
    "auto_structured",
    "auto_gaussian",
    "auto_normal_messenger",
    "auto_hierarchical_normal_messenger",
    "auto_regressive_messenger",
]


@pytest.mark.parametrize("name", FAMILIES)
def test_round_trip_of_other_families(tmp_path, name):
    if name not in registry.names():
        pytest.skip(f"{name} is not installed")
    guide = registry.make(name, vector_model)
    train(guide, vector_model, steps=3)
    median = guide.median(DATA)
    loaded = round_trip(guide, tmp_path / "g.pt", vector_model, expect=name)
    assert type(loaded) is type(guide)
    assert_same(loaded.median(DATA), median)


def test_round_trip_of_an_unregistered_subclass(tmp_path):
    guide = train(MyNormal(model))
    loaded = round_trip(guide, tmp_path / "g.pt")
    assert type(loaded).__name__ == "MyNormal"
    assert_same(loaded.median(DATA), guide.median())


def test_saved_file_is_plain_data(tmp_path):
    guide = train(registry.make("auto_normal", model, init_scale=0.05))
    save(guide, tmp_path / "g.pt")
    payload = torch.load(tmp_path / "g.pt", weights_only=True)
    assert payload["format"] == GUIDE_CORE_FORMAT
    assert payload["format_version"] == FORMAT_VERSION
    assert set(payload["versions"]) == {"guide_core", "torch", "pyro"}
    record = payload["guide"]
    assert record["registry_name"] == "auto_normal"
    assert record["class_name"] == "AutoNormal"
    assert record["kwargs"] == {"init_scale": 0.05}
    assert record["sites"] == {
        "a": {"shape": [], "event_dim": 0, "discrete": False},
        "b": {"shape": [], "event_dim": 0, "discrete": False},
    }
    assert set(record["state"]) == set(guide.state_dict())


def test_loading_twice_and_saving_a_loaded_guide(tmp_path):
    guide = AutoGuideList(model)
    guide.append(AutoNormal(poutine.block(model, hide=["b"])))
    guide.append(AutoDelta(poutine.block(model, expose=["b"])))
    train(guide)
    loaded = round_trip(guide, tmp_path / "a.pt")
    again = round_trip(loaded, tmp_path / "b.pt")  # never called in between
    assert_same(again.median(DATA), guide.median())


# -- constructor arguments ----------------------------------------------------------


def test_overrides_replace_saved_arguments(tmp_path):
    guide = AutoNormal(model, init_scale=0.05)
    save(guide, tmp_path / "g.pt")
    loaded = load(tmp_path / "g.pt", model, init_scale=0.2)
    assert loaded._init_scale == 0.2


def test_an_arbitrary_callable_is_refused_at_save_time(tmp_path):
    guide = train(AutoNormal(model, init_loc_fn=lambda site: site["fn"].mean))
    with pytest.raises(SaveError, match=r"argument init_loc_fn=<function") as info:
        save(guide, tmp_path / "g.pt")
    assert "omit=['init_loc_fn']" in str(info.value)
    assert "load(path, model, init_loc_fn=...)" in str(info.value)


def test_an_omitted_argument_must_be_passed_again(tmp_path):
    def my_init(site):
        return site["fn"].mean

    guide = train(AutoNormal(model, init_loc_fn=my_init))
    save(guide, tmp_path / "g.pt", omit=["init_loc_fn"])
    pyro.clear_param_store()
    with pytest.raises(LoadError, match=r"without the argument\(s\) init_loc_fn"):
        load(tmp_path / "g.pt", model)
    loaded = load(tmp_path / "g.pt", model, init_loc_fn=my_init)
    assert loaded.init_loc_fn is my_init
    assert_same(loaded.median(DATA), guide.median())


def test_a_list_that_was_never_called_cannot_be_saved(tmp_path):
    guide = AutoGuideList(model)
    guide.append(AutoNormal(model))
    with pytest.raises(SaveError, match="part 0 .*has not been set up"):
        save(guide, tmp_path / "g.pt")


def test_a_plain_callable_part_cannot_be_saved(tmp_path):
    guide = AutoGuideList(model)
    guide.append(AutoNormal(poutine.block(model, hide=["b"])))
    guide.append(lambda data: {"b": pyro.sample("b", dist.Delta(torch.tensor(1.0)))})
    guide(DATA)
    with pytest.raises(SaveError, match="wraps the plain callable"):
        save(guide, tmp_path / "g.pt")


def test_save_takes_only_guides(tmp_path):
    with pytest.raises(SaveError, match="takes a guide_core guide"):
        save(torch.nn.Linear(1, 1), tmp_path / "g.pt")


# -- refusals ---------------------------------------------------------------------


def test_a_file_of_another_guide_is_refused(tmp_path):
    save(AutoDelta(model), tmp_path / "g.pt")
    with pytest.raises(WrongGuideError, match=r"holds a AutoDelta \('auto_delta'\)"):
        load(tmp_path / "g.pt", model, expect="auto_normal")
    with pytest.raises(WrongGuideError, match="not 'AutoNormal'"):
        load(tmp_path / "g.pt", model, expect=AutoNormal)
    assert type(load(tmp_path / "g.pt", model, expect="AutoDelta")) is AutoDelta
    save(MyNormal(model), tmp_path / "mine.pt")  # a subclass is what it extends
    assert type(load(tmp_path / "mine.pt", model, expect="auto_normal")) is MyNormal
    with pytest.raises(WrongGuideError, match="holds a MyNormal guide, not 'Auto"):
        load(tmp_path / "mine.pt", model, expect="AutoDelta")


def test_another_model_is_refused_at_the_first_call(tmp_path):
    save(train(AutoNormal(model)), tmp_path / "g.pt")
    loaded = load(tmp_path / "g.pt", other_model)
    with pytest.raises(WrongModelError) as info:
        loaded.median(DATA)
    message = str(info.value)
    assert "holds a guide for another model" in message
    assert "the model has no latent site 'b'" in message
    assert "the model has latent site 'c'" in message
    assert "site 'a' has shape (2,)" in message and "but () " in message


def test_another_model_is_refused_at_once_with_model_args(tmp_path):
    save(train(AutoNormal(model)), tmp_path / "g.pt")
    with pytest.raises(WrongModelError, match="site 'a' has shape"):
        load(tmp_path / "g.pt", other_model, model_args=(DATA,))


def test_other_data_shapes_are_refused(tmp_path):
    def plated(data):
        with pyro.plate("data", len(data)):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(x, 1.0), obs=data)

    save(train(AutoNormal(plated), plated), tmp_path / "g.pt")
    with pytest.raises(WrongModelError, match=r"site 'x' has shape \(3,\).*\(5,\)"):
        load(tmp_path / "g.pt", plated, model_args=(DATA[:3],))


def test_a_newer_format_is_refused(tmp_path):
    save(AutoNormal(model), tmp_path / "g.pt")
    payload = torch.load(tmp_path / "g.pt", weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, tmp_path / "g.pt")
    with pytest.raises(FormatVersionError, match="format 2 .*upgrade guide_core"):
        load(tmp_path / "g.pt", model)


def test_a_file_that_is_not_a_guide_file_is_refused(tmp_path):
    torch.save(AutoNormal(model).state_dict(), tmp_path / "state.pt")
    with pytest.raises(LoadError, match="not a guide_core guide file"):
        load(tmp_path / "state.pt", model)
    torch.save({"x": torch.nn.Linear(1, 1)}, tmp_path / "module.pt")
    with pytest.raises(LoadError, match="other than tensors and plain values"):
        load(tmp_path / "module.pt", model)
