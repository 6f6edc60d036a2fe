"""The dependency graph of a model's latent sites, for structured guides.

Structured guides (``AutoStructured``, ``AutoGaussian``) let a site's posterior
depend on the sites it interacts with. This module infers those edges from the
model (with :func:`pyro.infer.inspect.get_dependencies`, fed the values of a
plain run of the model, see :func:`model_dependencies`), checks a graph a user
wrote by hand, and orders the sites so that every upstream site comes before
its downstream sites. Errors name the offending sites.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer.inspect import get_dependencies
from pyro.poutine.messenger import Messenger

__all__ = [
    "check_graph",
    "infer_dependencies",
    "model_dependencies",
    "topological_order",
]

Graph = Mapping[str, Mapping[str, Any]]  # {downstream: {upstream: edge data}}


class _SameShapes(Messenger):
    """Check each site's distribution has the shapes it had in a plain run."""

    def __init__(self, plain: Any):
        super().__init__()
        self.plain = plain

    def _pyro_post_sample(self, msg: dict) -> None:
        name, fn = msg["name"], msg["fn"]
        if name not in self.plain.nodes or not hasattr(fn, "batch_shape"):
            return
        before = self.plain.nodes[name]["fn"]
        shapes = (fn.batch_shape, fn.event_shape)
        if shapes != (before.batch_shape, before.event_shape):
            raise ValueError(
                f"cannot infer the dependencies of site {name!r}: while tracking "
                f"which sites its parameters come from, its distribution got batch "
                f"shape {tuple(fn.batch_shape)} and event shape "
                f"{tuple(fn.event_shape)} instead of {tuple(before.batch_shape)} and "
                f"{tuple(before.event_shape)} (is there a tensor.new(shape) call in "
                "the model? use torch.zeros(shape) or tensor.new_zeros(shape)); or "
                "pass the graph by hand, e.g. dependencies={"
                f"{name!r}: {{'<upstream site>': 'linear'}}}}"
            )


def model_dependencies(
    model: Callable, args: tuple = (), kwargs: Mapping[str, Any] | None = None
) -> dict[str, dict[str, dict[str, set]]]:
    """Run ``model``, hidden from outer handlers, and return its dependencies.

    The model runs twice, without touching the random state: once plainly,
    then with every value replayed from the first run while
    :func:`pyro.infer.inspect.get_dependencies` tracks which sites each
    log-density comes from. No sampler runs on tracked parameters, so samplers
    that break on them (Exponential's and Cauchy's ``rate.new(shape)``, which
    the tracking turns into an empty tensor) see plain ones.

    Returns
    -------
    dict
        ``{"prior_dependencies": ..., "posterior_dependencies": ...}``, each
        ``{downstream: {upstream: set of plate names}}``, as
        :func:`pyro.infer.inspect.get_dependencies` computes them.

    Raises
    ------
    ValueError
        A site's distribution changes shape under the tracking (the message
        names the site and says how to fix the model or pass the graph).
    """
    args, kwargs = tuple(args), dict(kwargs or {})
    with torch.random.fork_rng(), torch.no_grad(), pyro.validation_enabled(False):
        plain = poutine.block(poutine.trace(model).get_trace)(*args, **kwargs)
    tracked = _SameShapes(plain)(poutine.replay(model, trace=plain))
    return poutine.block(get_dependencies)(tracked, args, kwargs)


def infer_dependencies(
    model: Callable,
    args: tuple,
    kwargs: Mapping[str, Any] | None,
    order: Sequence[str],
    edge: Any,
) -> dict[str, dict[str, Any]]:
    """Infer which latent sites a structured guide should make depend on which.

    Every pair of latent sites that interact in the posterior gets one edge,
    pointing from the site the model samples first (upstream) to the later one
    (downstream), so global sites come before the local sites that use them.

    Parameters
    ----------
    model : callable
        The model (without the guide's init strategy).
    args, kwargs :
        The model's arguments.
    order : sequence of str
        The latent sites in the order the model samples them; edges to other
        sites (e.g. ones hidden from this guide) are dropped.
    edge :
        The value stored on every edge (e.g. ``"linear"``).

    Returns
    -------
    dict
        ``{downstream: {upstream: edge}}``.
    """
    meta = model_dependencies(model, args, kwargs)
    position = {name: i for i, name in enumerate(order)}
    graph: dict[str, dict[str, Any]] = {}
    for site, partners in meta["posterior_dependencies"].items():
        if site not in position:
            continue
        for other in partners:
            if other not in position or other == site:
                continue
            if position[other] < position[site]:
                graph.setdefault(site, {})[other] = edge
            else:
                graph.setdefault(other, {})[site] = edge
    return graph


def check_graph(graph: Graph, what: str = "dependencies") -> None:
    """Check a hand-written ``{downstream: {upstream: edge}}`` graph's form.

    Raises
    ------
    TypeError
        A key is not a site name or a value is not a dict.
    ValueError
        A site depends on itself, or the graph has a cycle (the message lists
        the sites on it).
    """
    if not isinstance(graph, Mapping):
        raise TypeError(
            f"{what!r} must be a dict {{downstream: {{upstream: 'linear'}}}}: {graph!r}"
        )
    for downstream, upstreams in graph.items():
        if not isinstance(downstream, str):
            raise TypeError(f"{what!r} keys must be site names: {downstream!r}")
        if not isinstance(upstreams, Mapping):
            raise TypeError(
                f"{what}[{downstream!r}] must be a dict {{upstream site: 'linear'}}: "
                f"{upstreams!r}"
            )
        for upstream in upstreams:
            if upstream == downstream:
                raise ValueError(
                    f"{what}: site {downstream!r} depends on itself; remove "
                    f"{what}[{downstream!r}][{upstream!r}] (self-loops are not "
                    "allowed)"
                )
    cycle = _find_cycle(graph)
    if cycle:
        path = " -> ".join(repr(name) for name in cycle)
        raise ValueError(
            f"{what} has a cycle: {path}; a structured guide samples upstream "
            "sites first, so remove one of these edges"
        )


def _find_cycle(graph: Graph) -> list[str]:
    """Return one cycle as [a, b, ..., a] (upstream to downstream), or []."""
    children: dict[str, list[str]] = {}
    for downstream, upstreams in graph.items():
        for upstream in upstreams:
            children.setdefault(upstream, []).append(downstream)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(set(children) | set(graph)):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(children.get(root, ())))]
        state[root] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(children.get(child, ()))))
    return []


def topological_order(names: Iterable[str], graph: Graph) -> list[str]:
    """Order ``names`` so that every site comes after the sites it depends on.

    Among the sites that are ready, the one whose name sorts first goes next,
    so the order (and hence the order in which a guide draws random numbers)
    does not depend on how the graph was written.

    Raises
    ------
    ValueError
        The graph has a cycle, or refers to a site not in ``names``.
    """
    names = list(names)
    known = set(names)
    for downstream, upstreams in graph.items():
        missing = sorted({downstream, *upstreams} - known)
        if missing:
            raise ValueError(
                f"dependencies refer to {', '.join(map(repr, missing))}, which "
                f"{'is' if len(missing) == 1 else 'are'} not a latent site of the "
                f"model (its latent sites: {', '.join(map(repr, names))})"
            )
    check_graph(graph)
    pending = {name: len(graph.get(name, {})) for name in names}
    children: dict[str, list[str]] = {name: [] for name in names}
    for downstream, upstreams in graph.items():
        for upstream in upstreams:
            children[upstream].append(downstream)
    order = []
    while pending:
        name = min(n for n, count in pending.items() if count == 0)
        del pending[name]
        for child in children[name]:
            pending[child] -= 1
        order.append(name)
    return order
