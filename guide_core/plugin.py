"""The plugin API: every name a guide family may import from ``guide_core``.

A plugin imports from two places only: the package itself (``from guide_core
import GuideSpec, hookimpl``, the names in ``guide_core.__all__``) and this
module (``from guide_core.plugin import constrain, validate_init_scale``). The
built-in families under ``guide_plugins`` are held to the same rule by a test
(``tests/test_layers.py``), so what they use is exactly what a third party gets.

Each name is re-exported from its home in :mod:`guide_core.core` or
:mod:`guide_core.registry`; the object is the same. By group: the protocols a
guide builds on; the prototype (one traced run, frozen into per-site facts);
the records a plugin registers; the latent steps (constrain, add the log-det,
emit a point mass); packing; initialization; summaries; the dependency graph;
the capture of tensor programs; the registry's helpers and errors.

**Stability.** The names in ``__all__`` are the stable surface. Within a
``0.x`` series a name keeps its meaning, and its signature only gains
optional keywords; a name is removed or changed only after a release in
which using it warns. Everything else under ``guide_core.core`` and
``guide_core.registry`` is internal and may change in any release: import it
from here or not at all.
"""

from __future__ import annotations

from .core.capture import (
    NotCapturable,
    ProgramCache,
    capturing,
    perturbed,
    record,
    signature,
)
from .core.composite import AutoCallable, AutoGuideList
from .core.dependencies import (
    check_graph,
    infer_dependencies,
    model_dependencies,
    topological_order,
)
from .core.gaussian_start import (
    GaussianStart,
    Whitening,
    location_steps,
    mean_field_scale,
    row_step_bounds,
    scale_steps,
)
from .core.guide import AutoGuide, validate_init_scale
from .core.init_messenger import InitMessenger, support_errors, unwrap_init
from .core.initialization import (
    init_to_feasible,
    init_to_generated,
    init_to_mean,
    init_to_median,
    init_to_sample,
    init_to_uniform,
    init_to_value,
)
from .core.latent import (
    GuideDelta,
    assign_param,
    constrain,
    emit_constrained,
    get_nested,
    sample_constrained,
    set_nested,
)
from .core.messenger import AutoMessenger
from .core.packing import LatentLayout, check_not_subsampled, empirical_quantiles
from .core.param_leaf import param_with_leaf
from .core.prototype import (
    PlateFacts,
    Prototype,
    SiteFacts,
    prototype_hide_fn,
    site_plates,
    trace_prototype,
)
from .core.summaries import (
    as_quantiles,
    distribution_median,
    distribution_quantiles,
    point_quantiles,
)
from .registry.checks import accepts, require_extras
from .registry.errors import (
    MissingExtraError,
    UnexpectedKeywordError,
    UnknownGuideError,
)
from .registry.hookspecs import hookimpl
from .registry.manager import current_registry
from .registry.spec import (
    BackendSpec,
    Capabilities,
    GuideSpec,
    InitStrategySpec,
    ProcedureOutcome,
)
from .registry.warm_start import trained_values, warm_init

__all__ = [
    # protocols
    "AutoCallable",
    "AutoGuide",
    "AutoGuideList",
    "AutoMessenger",
    "InitMessenger",
    # prototype: one traced run of the model, frozen into per-site facts
    "PlateFacts",
    "Prototype",
    "SiteFacts",
    "prototype_hide_fn",
    "site_plates",
    "trace_prototype",
    # records a plugin registers
    "BackendSpec",
    "Capabilities",
    "GuideSpec",
    "InitStrategySpec",
    "ProcedureOutcome",
    # latent steps: parameters by dotted name, constrain, emit a point mass
    "GuideDelta",
    "assign_param",
    "constrain",
    "emit_constrained",
    "get_nested",
    "sample_constrained",
    "set_nested",
    # packing: every latent site in one flat vector
    "LatentLayout",
    "check_not_subsampled",
    "empirical_quantiles",
    "param_with_leaf",
    # initialization
    "GaussianStart",
    "Whitening",
    "init_to_feasible",
    "init_to_generated",
    "init_to_mean",
    "init_to_median",
    "init_to_sample",
    "init_to_uniform",
    "init_to_value",
    "location_steps",
    "mean_field_scale",
    "row_step_bounds",
    "scale_steps",
    "support_errors",
    "unwrap_init",
    "validate_init_scale",
    # summaries: medians and quantiles
    "as_quantiles",
    "distribution_median",
    "distribution_quantiles",
    "point_quantiles",
    # dependency graph
    "check_graph",
    "infer_dependencies",
    "model_dependencies",
    "topological_order",
    # capture: record a tensor program once, replay it
    "NotCapturable",
    "ProgramCache",
    "capturing",
    "perturbed",
    "record",
    "signature",
    # registry: hooks, lookups while a guide is made, errors, warm starts
    "MissingExtraError",
    "UnexpectedKeywordError",
    "UnknownGuideError",
    "accepts",
    "current_registry",
    "hookimpl",
    "require_extras",
    "trained_values",
    "warm_init",
]
