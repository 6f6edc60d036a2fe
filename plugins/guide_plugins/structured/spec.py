"""Checking and expanding ``AutoStructured``'s ``conditionals`` and ``dependencies``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from guide_core.plugin import check_graph

__all__ = ["CONDITIONALS", "check_conditionals", "check_dependencies", "per_site"]

CONDITIONALS = ("delta", "normal", "mvn")
DEPENDENCIES = ("linear",)


def _check_conditional(kind: Any, where: str) -> None:
    if callable(kind):
        return
    if not isinstance(kind, str) or kind not in CONDITIONALS:
        raise ValueError(
            f"unknown conditional {kind!r} for {where}; use one of "
            f"{', '.join(map(repr, CONDITIONALS))} or a callable that returns "
            "zero-mean noise of the site's flattened unconstrained size"
        )


def _check_edge(kind: Any, where: str) -> None:
    if callable(kind):
        return
    if not isinstance(kind, str) or kind not in DEPENDENCIES:
        raise ValueError(
            f"unknown dependency type {kind!r} for {where}; use 'linear' or a "
            "callable that maps the flattened upstream noise to the flattened "
            "downstream noise"
        )


def check_conditionals(conditionals: Any) -> None:
    """Check ``conditionals``: one type for every site, or a dict by site name."""
    if isinstance(conditionals, Mapping):
        for name, kind in conditionals.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"'conditionals' keys must be site names: {name!r} in "
                    f"{conditionals!r}"
                )
            _check_conditional(kind, f"site {name!r}")
    else:
        _check_conditional(conditionals, "every site")


def check_dependencies(dependencies: Any) -> None:
    """Check ``dependencies``: one edge type (the graph is then inferred from
    the model), or a graph ``{downstream: {upstream: type}}``."""
    if isinstance(dependencies, Mapping):
        check_graph(dependencies)
        for downstream, upstreams in dependencies.items():
            for upstream, kind in upstreams.items():
                _check_edge(kind, f"the edge {upstream!r} -> {downstream!r}")
    else:
        _check_edge(dependencies, "every inferred edge")


def per_site(conditionals: Any, names: Sequence[str]) -> dict[str, str | Callable]:
    """Expand ``conditionals`` to one entry per latent site, checking the names.

    Raises
    ------
    ValueError
        A site has no conditional, or a conditional names a site the model
        does not have.
    """
    if not isinstance(conditionals, Mapping):
        return {name: conditionals for name in names}
    unknown = sorted(set(conditionals) - set(names))
    if unknown:
        raise ValueError(
            f"'conditionals' names {', '.join(map(repr, unknown))}, not a latent "
            f"site of the model (its latent sites: {', '.join(map(repr, names))})"
        )
    missing = [name for name in names if name not in conditionals]
    if missing:
        example = ", ".join(f"{name!r}: 'normal'" for name in missing)
        raise ValueError(
            f"'conditionals' has no entry for site(s) {', '.join(map(repr, missing))};"
            f" give every latent site a conditional, e.g. add {{{example}}}"
        )
    return dict(conditionals)
