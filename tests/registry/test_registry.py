"""The registry: discovery, lookup, errors (each by message) and the facade."""

from __future__ import annotations

import subprocess
import sys
import types
from importlib import metadata

import pyro
import pyro.distributions as dist
import pytest
import torch
from toys import AutoToy

import guide_core
from guide_core import (
    BrokenPluginError,
    Capabilities,
    DuplicateNameError,
    GuideSpec,
    InitStrategySpec,
    MissingExtraError,
    UnexpectedKeywordError,
    UnknownBackendError,
    UnknownGuideError,
    UnknownInitStrategyError,
    hookimpl,
    registry,
)
from guide_core.registry import Registry
from guide_core.registry.spec import BackendSpec


def model():
    pyro.sample("x", dist.Normal(0.0, 1.0))


def toy_plugin(name="auto_toy", family="toy", factory=AutoToy):
    plugin = types.SimpleNamespace()

    @hookimpl
    def register_guides(register):
        register(GuideSpec(name=name, factory=factory, family=family, summary="Toy."))

    plugin.register_guides = register_guides
    return plugin


def fake_entry_point(name, value, module_text):
    """An entry point for an importable module made of ``module_text``."""
    mod_name = value.split(":")[0]
    module = types.ModuleType(mod_name)
    sys.modules.pop(mod_name, None)

    class Loader(metadata.EntryPoint):
        def load(self):
            exec(module_text, module.__dict__)  # noqa: S102 - test fixture
            return module

    return Loader(name=name, value=value, group="guide_core")


@pytest.fixture
def fresh():
    """A registry of its own with only the entry points a test injects."""

    def build(*eps):
        return Registry(autoload=True, entry_points=lambda: list(eps))

    return build


GOOD = """
from guide_core import GuideSpec, hookimpl
from toys import AutoToy

@hookimpl
def register_guides(register):
    register(GuideSpec(name="auto_good", factory=AutoToy, family="good",
                       summary="A good guide."))
"""


def test_importing_guide_core_loads_no_plugin():
    code = (
        "import guide_core, guide_core.registry as r; "
        "assert not r.default_registry()._loaded; "
        "assert 'guide_plugins' not in __import__('sys').modules; print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "ok"


def test_entry_point_plugins_are_discovered(fresh):
    reg = fresh(fake_entry_point("good", "good_mod", GOOD))
    assert reg.names() == ["auto_good"]
    assert reg.info("auto_good").plugin == "good"
    assert reg.families() == {"good": ["auto_good"]}


def test_unknown_guide_is_a_lookup_error_that_suggests_close_names(fresh):
    reg = fresh(fake_entry_point("good", "good_mod", GOOD))
    with pytest.raises(UnknownGuideError) as err:
        reg.make("auto_goood", model)
    assert isinstance(err.value, LookupError)
    message = str(err.value)
    assert "guide 'auto_goood' not found" in message
    assert "did you mean 'auto_good'?" in message
    assert "available guides: auto_good" in message


def test_two_plugins_claiming_one_name_is_an_error_naming_both(fresh):
    other = GOOD.replace('family="good"', 'family="other"')
    reg = fresh(
        fake_entry_point("good", "good_mod", GOOD),
        fake_entry_point("rival", "rival_mod", other),
    )
    with pytest.raises(DuplicateNameError, match="'good' and 'rival'"):
        reg.make("auto_good", model)
    assert "auto_good" not in reg.names()


def test_in_process_plugin_claiming_a_taken_name_is_refused_and_not_kept():
    reg = Registry(autoload=False)
    reg.register(toy_plugin(), name="first")
    with pytest.raises(DuplicateNameError, match="'first' and 'second'"):
        reg.register(toy_plugin(family="rival"), name="second")
    assert reg.info("auto_toy").plugin == "first"
    assert "second" not in reg.plugins()


def test_a_plugin_that_raises_on_import_is_listed_broken_and_others_still_load(fresh):
    reg = fresh(
        fake_entry_point("bad", "bad_mod", "raise RuntimeError('boom at import')"),
        fake_entry_point("good", "good_mod", GOOD),
    )
    assert reg.names() == ["auto_good"]
    assert list(reg.broken()) == ["bad"]
    assert "boom at import" in reg.broken()["bad"].traceback
    with pytest.raises(BrokenPluginError, match="plugin 'bad'.*boom at import") as err:
        reg.make("auto_from_bad_plugin", model)
    assert isinstance(err.value.__cause__, RuntimeError)


def test_a_plugin_whose_hook_raises_re_raises_for_the_names_it_registered(fresh):
    text = GOOD + "\n    raise ValueError('hook failed halfway')\n"
    reg = fresh(fake_entry_point("half", "half_mod", text))
    assert "half" in reg.broken()
    assert reg.broken()["half"].provides == ("auto_good",)
    with pytest.raises(BrokenPluginError, match="hook failed halfway") as err:
        reg.make("auto_good", model)
    assert isinstance(err.value.__cause__, ValueError)


def test_unknown_keyword_names_the_keyword_and_the_guide():
    reg = Registry(autoload=False)
    reg.register(toy_plugin())
    with pytest.raises(UnexpectedKeywordError) as err:
        reg.make("auto_toy", model, scael=2.0)
    message = str(err.value)
    assert "guide 'auto_toy' (AutoToy) does not take keyword 'scael'" in message
    assert "did you mean 'scale'?" in message
    assert "it takes: init_loc_fn, scale" in message
    assert isinstance(err.value, TypeError)


def test_init_loc_fn_may_be_given_by_name():
    reg = Registry(autoload=False)
    reg.register(toy_plugin())
    guide = reg.make("auto_toy", model, init_loc_fn="feasible")
    assert guide.init_loc_fn is guide_core.init_to_feasible
    assert reg.init_strategy("init_to_median") is guide_core.init_to_median
    assert set(reg.init_strategies()) >= {"feasible", "median", "mean", "sample"}


def test_unknown_init_strategy_lists_the_registered_ones():
    reg = Registry(autoload=False)
    with pytest.raises(UnknownInitStrategyError) as err:
        reg.init_strategy("medain")
    assert "did you mean 'median'" in str(err.value)
    assert "available init strategies:" in str(err.value)


def test_third_party_init_strategies_register_through_the_hook():
    reg = Registry(autoload=False)

    class Plugin:
        @hookimpl
        def register_init_strategies(self, register):
            register(InitStrategySpec("zero", guide_core.init_to_feasible, "Zeros."))

    reg.register(Plugin())
    assert reg.init_strategy("zero") is guide_core.init_to_feasible
    assert reg.init_strategies()["zero"].plugin is not None


def test_unknown_backend_lists_installed_ones_and_missing_extras_say_what_to_install():
    reg = Registry(autoload=False)

    class Plugin:
        @hookimpl
        def register_gaussian_backends(self, register):
            register(BackendSpec("mine", AutoToy, "Ours."))
            register(
                BackendSpec(
                    "exotic", AutoToy, "Needs a package.", extras=("no_such_pkg_xyz",)
                )
            )

    reg.register(Plugin())
    assert reg.backend("mine").factory is AutoToy
    with pytest.raises(UnknownBackendError, match="installed back ends: exotic, mine"):
        reg.backend("mien")
    with pytest.raises(MissingExtraError, match="pip install 'guide-core\\[no_such"):
        reg.backend("exotic")


def test_guide_needing_a_missing_package_says_which_extra_to_install():
    reg = Registry(autoload=False)

    class Plugin:
        @hookimpl
        def register_guides(self, register):
            register(GuideSpec("auto_needy", AutoToy, "toy", "Needy.", extras="nopkgq"))

    reg.register(Plugin())
    with pytest.raises(MissingExtraError, match="needs nopkgq.*pip install"):
        reg.make("auto_needy", model)


def test_register_hook_rejects_a_wrong_record_type_by_naming_the_plugin():
    reg = Registry(autoload=False)

    class Plugin:
        @hookimpl
        def register_guides(self, register):
            register({"name": "auto_dict"})

    with pytest.raises(BrokenPluginError, match="takes a GuideSpec, got dict"):
        reg.register(Plugin(), name="wrong")
    assert "wrong" not in reg.plugins()


def test_guide_spec_validates_its_fields_with_messages_naming_them():
    with pytest.raises(ValueError, match="'name' must be snake case"):
        GuideSpec("AutoToy", AutoToy, "toy", "x")
    with pytest.raises(TypeError, match="'factory' must be callable"):
        GuideSpec("auto_toy", 3, "toy", "x")
    spec = GuideSpec("auto_toy", AutoToy, "toy", "x", capabilities=Capabilities())
    assert spec.class_name == "AutoToy"
    with pytest.raises(AttributeError):
        spec.name = "other"  # frozen


def test_disable_autoload_env_skips_entry_points(fresh, monkeypatch):
    monkeypatch.setenv("GUIDE_CORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = Registry(entry_points=lambda: [fake_entry_point("good", "good_mod", GOOD)])
    assert reg.names() == []


def test_disable_plugins_env_blocks_single_plugins(monkeypatch):
    monkeypatch.setenv("GUIDE_CORE_DISABLE_PLUGINS", "good")
    reg = Registry(
        autoload=True, entry_points=lambda: [fake_entry_point("good", "good_mod", GOOD)]
    )
    assert reg.names() == []


def test_unregister_removes_a_plugin_and_resolves_conflicts():
    reg = Registry(autoload=False)
    reg.register(toy_plugin(), name="first")
    reg.unregister("first")
    assert "auto_toy" not in reg
    reg.register(toy_plugin(family="second"), name="second")
    assert reg.info("auto_toy").family == "second"


def test_make_builds_the_guide_and_info_accepts_class_names():
    reg = Registry(autoload=False)
    reg.register(toy_plugin())
    guide = reg.make("auto_toy", model, scale=3.0)
    assert isinstance(guide, AutoToy) and guide.scale == 3.0
    assert reg.info("AutoToy").name == "auto_toy"
    assert set(guide()) == {"x"}


def test_class_names_resolve_lazily_through_the_default_registry():
    name = registry.register(toy_plugin(name="auto_lazy_toy"))
    try:
        assert guide_core.AutoToy is AutoToy
    finally:
        registry.unregister(name)
    with pytest.raises(AttributeError, match="no installed plugin registers"):
        guide_core.AutoNoSuchGuide  # noqa: B018


def test_the_example_third_party_plugin_is_found_through_its_entry_point():
    pytest.importorskip("guide_core_example")
    assert "auto_prior" in registry.names()
    spec = registry.info("auto_prior")
    assert spec.plugin == "example" and spec.family == "example"
    guide = registry.make("auto_prior", model)
    assert set(guide()) == {"x"}


def test_cli_list_shows_families_capabilities_and_the_example_plugin():
    out = subprocess.run(
        [sys.executable, "-m", "guide_core", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "init strategies (init_loc_fn=<name>):" in out
    if "auto_prior" in registry.names():
        assert "[example]" in out and "auto_prior" in out and "handles:" in out


def test_registry_repr_and_iteration():
    reg = Registry(autoload=False)
    assert repr(reg) == "<Registry unloaded>"
    reg.register(toy_plugin())
    assert repr(reg) == "<Registry 1 guides>"
    assert [s.name for s in reg] == ["auto_toy"]
    assert torch.is_tensor(reg.make("auto_toy", model).median()["x"])
