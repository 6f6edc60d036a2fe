"""The ``messengers`` family: guides written as effect handlers over the model.

:class:`AutoNormalMessenger`, :class:`AutoHierarchicalNormalMessenger` and
:class:`AutoRegressiveMessenger` are :class:`guide_core.AutoMessenger`\\ s: they
run the model themselves and at each latent site replace the prior, already
conditioned on the values sampled upstream, by ``get_posterior(name, prior)``.
A subclass overrides ``get_posterior`` for some sites and falls back to
``super().get_posterior`` for the rest.

Beyond ``pyro.infer.autoguide``: all three have ``median`` and ``quantiles``
(also of overridden sites), a ``state_dict`` loads into a fresh guide before
its first call, and they work as parts of an :class:`~guide_core.AutoGuideList`.
"""

from __future__ import annotations

from collections.abc import Callable

from guide_core import Capabilities, GuideSpec, hookimpl

from .normal import AutoHierarchicalNormalMessenger, AutoNormalMessenger
from .regressive import AutoRegressiveMessenger

__all__ = [
    "AutoHierarchicalNormalMessenger",
    "AutoNormalMessenger",
    "AutoRegressiveMessenger",
    "register_guides",
]


@hookimpl
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register the three messenger guides."""
    # Subsampling: parameters are full-size over subsampled plates, or shared
    # over amortized_plates. Not JIT: parameters are created during the run.
    register(
        GuideSpec(
            name="auto_normal_messenger",
            factory=AutoNormalMessenger,
            family="messengers",
            summary="Mean-field Normal per site, as an overridable messenger.",
            capabilities=Capabilities(subsample=True, mean_field=True),
        )
    )
    register(
        GuideSpec(
            name="auto_hierarchical_normal_messenger",
            factory=AutoHierarchicalNormalMessenger,
            family="messengers",
            summary="Normal per site centred on a learned multiple of the "
            "conditioned prior mean.",
            capabilities=Capabilities(subsample=True),
        )
    )
    register(
        GuideSpec(
            name="auto_regressive_messenger",
            factory=AutoRegressiveMessenger,
            family="messengers",
            summary="Learned affine map of each site's conditioned prior.",
            capabilities=Capabilities(subsample=True),
        )
    )
