"""guide_core: automatic variational guides for Pyro models, as a plugin registry.

The layers, each a subpackage, import one way only (cli -> workflow -> core,
registry): :mod:`~guide_core.core` holds the protocols (:class:`AutoGuide`,
:class:`AutoMessenger`), the initialization strategies and composition
(:class:`AutoGuideList`, :class:`AutoCallable`); :mod:`~guide_core.registry` the
plugin manager; :mod:`~guide_core.workflow` fitting, diagnostics and save/load;
:mod:`~guide_core.cli` the command line. Every guide family is a plugin; its
classes are importable from here by name (``from guide_core import
AutoNormal``), resolved through the registry on first access, so ``import
guide_core`` itself loads no plugin.

Writing a plugin
----------------
Declare an entry point in your ``pyproject.toml``::

    [project.entry-points.guide_core]
    my_family = "my_package.plugin"

and in ``my_package/plugin.py`` implement a hook::

    from guide_core import AutoGuide, GuideSpec, hookimpl

    class AutoMine(AutoGuide):
        ...

    @hookimpl
    def register_guides(register):
        register(GuideSpec(name="auto_mine", factory=AutoMine,
                           family="my_family", summary="What it is."))

Beyond the names here, a plugin imports only from :mod:`guide_core.plugin`,
the plugin API (the latent steps, packing, summaries, ... of the core).
"""

from __future__ import annotations

from typing import Any

from . import registry
from .core.composite import AutoCallable, AutoGuideList
from .core.guide import AutoGuide
from .core.init_messenger import InitMessenger
from .core.initialization import (
    init_to_feasible,
    init_to_generated,
    init_to_mean,
    init_to_median,
    init_to_sample,
    init_to_uniform,
    init_to_value,
)
from .core.messenger import AutoMessenger
from .core.prototype import PlateFacts, Prototype, SiteFacts
from .registry.composition import compose
from .registry.errors import (
    BrokenPluginError,
    DuplicateNameError,
    MissingExtraError,
    RegistryError,
    UnexpectedKeywordError,
    UnknownBackendError,
    UnknownGuideError,
    UnknownInitStrategyError,
)
from .registry.hookspecs import hookimpl, hookspec
from .registry.spec import BackendSpec, Capabilities, GuideSpec, InitStrategySpec
from .workflow.draws.diagnostics import KHat, psis_khat
from .workflow.draws.posterior import (
    Summary,
    sample_posterior,
    summary,
    to_inference_data,
)
from .workflow.fitting.elbo_module import ELBOModule
from .workflow.fitting.loop import FitResult, NonFiniteLossError, fit
from .workflow.fitting.svi import SVI
from .workflow.persist.save_load import FORMAT_VERSION, load, save
from .workflow.report.plots import plot_compare, plot_fit

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "AutoCallable",
    "AutoGuide",
    "AutoGuideList",
    "AutoMessenger",
    "BackendSpec",
    "BrokenPluginError",
    "Capabilities",
    "DuplicateNameError",
    "ELBOModule",
    "FitResult",
    "GuideSpec",
    "InitMessenger",
    "InitStrategySpec",
    "KHat",
    "MissingExtraError",
    "NonFiniteLossError",
    "PlateFacts",
    "Prototype",
    "SVI",
    "RegistryError",
    "SiteFacts",
    "Summary",
    "UnexpectedKeywordError",
    "UnknownBackendError",
    "UnknownGuideError",
    "UnknownInitStrategyError",
    "compose",
    "fit",
    "hookimpl",
    "hookspec",
    "init_to_feasible",
    "init_to_generated",
    "init_to_mean",
    "init_to_median",
    "init_to_sample",
    "init_to_uniform",
    "init_to_value",
    "load",
    "plot_compare",
    "plot_fit",
    "psis_khat",
    "registry",
    "sample_posterior",
    "save",
    "summary",
    "to_inference_data",
]


def __getattr__(name: str) -> Any:
    """Resolve guide class names (``AutoNormal``, ...) through the registry."""
    if name.startswith("Auto"):
        try:
            return registry.find_class(name)
        except AttributeError:
            pass
        available = sorted(spec.class_name for spec in registry.default_registry())
        raise AttributeError(
            f"module 'guide_core' has no attribute {name!r}; no installed plugin "
            f"registers a guide class of that name (available: "
            f"{', '.join(available) or 'none'}; see 'python -m guide_core list')"
        )
    raise AttributeError(f"module 'guide_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(globals()))
