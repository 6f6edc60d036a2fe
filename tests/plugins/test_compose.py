"""registry.compose / registry.make("auto"): a guide per site without
poutine.block; registry.make(..., init_from=trained): warm starts."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from guide_plugins.auto import ComposedGuide, CompositionError
from oracle import DATA

from guide_core import (
    AutoDelta,
    AutoGuide,
    AutoNormal,
    Capabilities,
    GuideSpec,
    UnexpectedKeywordError,
    UnknownGuideError,
    compose,
    hookimpl,
    load,
    registry,
    save,
)


def model(data):
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(a, b), obs=data)


def mixture(data):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[z], 1.0), obs=data)


class AutoDiscretePoint(AutoGuide):
    """A test guide for discrete sites only: each stays at its initial value."""

    def __init__(self, model, *, create_plates=None):
        super().__init__(model, create_plates=create_plates)

    def forward(self, *args, **kwargs):
        self._ensure_setup(*args, **kwargs)
        self._create_plates(*args, **kwargs)
        result = {}
        for name, site in self._sites().items():
            with self._site_plates(site):
                fn = dist.Delta(site.value, event_dim=site.event_dim)
                result[name] = pyro.sample(name, fn)
        return result

    def _median(self, *args, **kwargs):
        return {name: site.value for name, site in self._sites().items()}


class _Plugin:
    @hookimpl
    def register_guides(self, register):
        register(
            GuideSpec(
                name="auto_discrete_point",
                factory=AutoDiscretePoint,
                family="test",
                summary="Discrete sites at their initial value (a test guide).",
                capabilities=Capabilities(continuous=False, discrete=True),
            )
        )


@pytest.fixture
def point_plugin():
    name = registry.register(_Plugin(), name="test_compose_point")
    try:
        yield
    finally:
        registry.unregister(name)


def train(guide, model=model, data=DATA, steps=15, elbo=None):
    elbo = elbo or pyro.infer.Trace_ELBO()
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), elbo)
    return [svi.step(data) for _ in range(steps)]


def parts(guide):
    return [(type(p).__name__, list(p._prototype.sites)) for p in guide]


# -- choosing a guide per site ---------------------------------------------------


def test_discrete_sites_go_to_the_discrete_guide(point_plugin):
    guide = compose(mixture, discrete="auto_discrete_point")
    assert isinstance(guide, ComposedGuide) and len(guide) == 0
    guide(DATA)  # the parts are built at the first call
    assert parts(guide) == [
        ("AutoNormal", ["weights", "locs"]),
        ("AutoDiscretePoint", ["z"]),
    ]
    assert set(guide.median(DATA)) == {"weights", "locs", "z"}


def test_the_real_discrete_family_under_trace_enum():
    if "auto_discrete_parallel" not in registry.names():
        pytest.skip("the discrete plugin is not installed")
    guide = registry.make("auto", mixture)
    losses = train(guide, mixture, steps=3, elbo=pyro.infer.TraceEnum_ELBO())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert parts(guide) == [
        ("AutoNormal", ["weights", "locs"]),
        ("AutoDiscreteParallel", ["z"]),
    ]


def test_assignments_override_the_choice():
    guide = registry.compose(model, {"b": "auto_delta"}, default="auto_normal")
    train(guide, steps=2)
    assert parts(guide) == [("AutoNormal", ["a"]), ("AutoDelta", ["b"])]


def test_none_leaves_a_site_to_the_model():
    enumerated = pyro.infer.config_enumerate(mixture)
    guide = compose(enumerated, {"z": None})
    losses = train(guide, enumerated, steps=2, elbo=pyro.infer.TraceEnum_ELBO())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert parts(guide) == [("AutoNormal", ["weights", "locs"])]


def test_auto_name_and_part_keywords():
    guide = registry.make(
        "auto", model, assignments={"b": "auto_delta"}, init_scale=0.02
    )
    guide(DATA)
    normal, delta = guide
    assert isinstance(normal, AutoNormal) and isinstance(delta, AutoDelta)
    assert normal._init_scale == 0.02  # AutoDelta takes no init_scale: not given
    guide = registry.make("auto", model, default="auto_delta", init_loc_fn="median")
    guide(DATA)
    assert parts(guide) == [("AutoDelta", ["a", "b"])]


def test_state_loaded_before_the_first_call_waits_for_the_parts():
    trained = compose(model, {"b": "auto_delta"})
    train(trained, steps=5)
    fresh = compose(model, {"b": "auto_delta"})
    fresh.load_state_dict(trained.state_dict())
    assert fresh.state_dict().keys() == trained.state_dict().keys()
    median = fresh.median(DATA)
    assert all(torch.equal(median[k], v) for k, v in trained.median().items())


def test_a_composed_guide_round_trips(tmp_path):
    guide = compose(model, {"b": "auto_delta"}, init_scale=0.05)
    train(guide, steps=5)
    save(guide, tmp_path / "g.pt")
    pyro.clear_param_store()
    loaded = load(tmp_path / "g.pt", model, expect="auto")
    assert type(loaded) is ComposedGuide and len(loaded) == 2
    median = loaded.median(DATA)
    assert all(torch.equal(median[k], v) for k, v in guide.median().items())


# -- errors -------------------------------------------------------------------------


def test_an_unknown_site_is_named_with_the_model_sites():
    guide = compose(model, {"c": "auto_delta"})
    with pytest.raises(CompositionError, match="name 'c', which the model") as info:
        guide(DATA)
    assert "its latent sites are: a, b" in str(info.value)


def test_a_discrete_site_needs_a_discrete_guide(point_plugin):
    guide = compose(mixture, {"z": "auto_normal"})
    with pytest.raises(CompositionError, match="site 'z' is discrete") as info:
        guide(DATA)
    assert "from assignments['z']" in str(info.value)
    assert "auto_discrete_point" in str(info.value)  # a guide that can


def test_a_continuous_site_needs_a_continuous_guide(point_plugin):
    guide = compose(model, {"a": "auto_discrete_point"})
    with pytest.raises(CompositionError, match="site 'a' is continuous") as info:
        guide(DATA)
    assert "guides only discrete sites" in str(info.value)


def test_a_missing_discrete_guide_is_needed_only_for_discrete_sites():
    guide = compose(model, discrete="auto_not_installed")
    guide(DATA)  # no discrete site: never looked up
    guide = compose(mixture, discrete="auto_not_installed")
    with pytest.raises(UnknownGuideError, match="site 'z' goes to 'auto_not_in"):
        guide(DATA)


def test_names_and_keywords_are_checked_at_once():
    with pytest.raises(UnknownGuideError, match="'auto_nromal' not found"):
        compose(model, default="auto_nromal")
    with pytest.raises(UnknownGuideError, match="'auto_dleta' not found"):
        compose(model, {"b": "auto_dleta"})
    with pytest.raises(UnexpectedKeywordError, match="takes keyword 'init_scael'"):
        registry.make("auto", model, init_scael=0.1)
    with pytest.raises(TypeError, match="'assignments' must be a dict"):
        compose(model, ["b"])


# -- warm starts --------------------------------------------------------------------


def close(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "first, second", [("auto_normal", "auto_delta"), ("auto_delta", "auto_normal")]
)
def test_warm_start_begins_at_the_trained_median(first, second):
    trained = registry.make(first, model)
    train(trained)
    warm = registry.make(second, model, init_from=trained)
    close(warm.median(DATA), trained.median())


def test_warm_start_falls_back_for_missing_sites():
    warm = registry.make(
        "auto_normal", model, init_from={"a": 0.7}, init_loc_fn="median"
    )
    median = warm.median(DATA)
    assert median["a"].item() == pytest.approx(0.7)
    fallback = warm.init_loc_fn.keywords["fallback"]
    assert fallback is registry.init_strategy("median")


def test_warm_start_of_a_composition():
    trained = registry.make("auto_normal", model)
    train(trained)
    warm = registry.make(
        "auto", model, assignments={"b": "auto_delta"}, init_from=trained
    )
    close(warm.median(DATA), trained.median())


def test_a_warm_started_guide_can_be_saved(tmp_path):
    trained = registry.make("auto_normal", model)
    train(trained, steps=3)
    warm = registry.make("auto_delta", model, init_from=trained)
    save(warm, tmp_path / "g.pt")
    loaded = load(tmp_path / "g.pt", model)
    assert torch.equal(
        loaded.init_loc_fn.keywords["values"]["a"], trained.median()["a"]
    )


def test_warm_start_errors_say_what_to_do(point_plugin):
    with pytest.raises(ValueError, match="needs the model's arguments") as info:
        registry.make("auto_delta", model, init_from=AutoNormal(model))
    assert "init_from=trained_guide.median(*args, **kwargs)" in str(info.value)
    with pytest.raises(UnexpectedKeywordError, match="takes no init_loc_fn"):
        registry.make("auto_discrete_point", mixture, init_from={"z": 0})
    with pytest.raises(TypeError, match="must be a trained guide"):
        registry.make("auto_delta", model, init_from=3.0)


def test_a_messenger_median_needs_the_model_arguments():
    if "auto_normal_messenger" not in registry.names():
        pytest.skip("the messengers plugin is not installed")
    trained = registry.make("auto_normal_messenger", model)
    train(trained, steps=3)
    with pytest.raises(ValueError, match="needs the model's arguments"):
        registry.make("auto_normal", model, init_from=trained)
    warm = registry.make("auto_normal", model, init_from=trained.median(DATA))
    close(warm.median(DATA), {k: trained.median(DATA)[k] for k in ("a", "b")})
