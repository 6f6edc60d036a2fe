"""``guide_core.compose``: the ``"auto"`` guide, a guide per site, by its
documented arguments.

The guide itself is a plugin (``guide_plugins.auto``, registered as
``"auto"`` through an entry point like every family); this is the public
function that builds it through the default registry, so ``import
guide_core`` still loads no plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .manager import default_registry

__all__ = ["compose"]


def compose(
    model: Callable,
    assignments: Mapping[str, str | None] | None = None,
    *,
    default: str | None = "auto_normal",
    discrete: str | None = "auto_discrete_parallel",
    init_from: Any = None,
    **kwargs: Any,
) -> Any:
    """Build a guide that picks a guide per site: no ``poutine.block`` to write.

    The same as ``registry.make("auto", model, ...)``: a ``ComposedGuide``
    (``guide_plugins.auto``) whose parts are looked up in the registry that
    builds it.

    Parameters
    ----------
    model : callable
        A Pyro model.
    assignments : dict of str to str or None, optional
        ``{site name: guide name}`` for sites that should not get the default
        choice; ``None`` leaves a site unguided (enumerated in the model).
    default : str or None
        The registry name of the guide of the continuous sites.
    discrete : str or None
        The registry name of the guide of the discrete sites.
    init_from : guide or dict, optional
        A trained guide (or ``{site: value}``) to start from: parts that take
        ``init_loc_fn`` start at its median.
    **kwargs :
        Constructor arguments of the parts (e.g. ``init_scale=0.05``); each
        part gets those it takes, ``create_plates`` goes to the list.

    Returns
    -------
    ComposedGuide
        An :class:`~guide_core.AutoGuideList`; its parts are built at its
        first call, when the model's arguments are known.
    """
    return default_registry().make(
        "auto",
        model,
        assignments=assignments,
        default=default,
        discrete=discrete,
        init_from=init_from,
        **kwargs,
    )
