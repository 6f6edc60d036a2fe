"""Exact marginal scales of an ``AutoStructured`` guide with Gaussian parts."""

from __future__ import annotations

from typing import Any

import torch

from guide_core.plugin import get_nested

__all__ = ["marginal_scales"]


def marginal_scales(guide: Any) -> dict[str, torch.Tensor]:
    """Return each site's elementwise posterior scale in the unconstrained space.

    With ``"delta"``/``"normal"``/``"mvn"`` conditionals and ``"linear"``
    dependencies the guide is one joint Gaussian: each site's noise is a
    linear map of independent standard normals, so its marginal scales are
    the row norms of that map. Returns ``{site: flat scales}``.

    Raises
    ------
    NotImplementedError
        A site has a callable conditional or dependency (the marginals are
        then not Gaussian); the message names the site.
    """
    loadings: dict[str, torch.Tensor] = {}
    blocks: list[torch.Tensor] = []  # each site's own loading, to be placed
    owners: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for name, _ in guide._sorted_sites:
        kind = guide.conditionals[name]
        if callable(kind):
            raise NotImplementedError(
                f"site {name!r} has a callable conditional, so its quantiles are "
                "not Gaussian; use guide.median() or sample the guide instead"
            )
        loc = get_nested(guide.locs, name).detach()
        sizes[name] = loc.numel()
        if kind == "normal":
            own = torch.diag(get_nested(guide.scales, name).detach())
        elif kind == "mvn":
            scale = get_nested(guide.scales, name).detach()
            own = scale[:, None] * get_nested(guide.scale_trils, name).detach()
        else:
            own = None
        if own is not None:
            owners[name] = len(blocks)
            blocks.append(own)
    total = sum(block.shape[1] for block in blocks)
    offsets, start = [], 0
    for block in blocks:
        offsets.append(start)
        start += block.shape[1]
    stds = {}
    for name, _ in guide._sorted_sites:
        loc = get_nested(guide.locs, name).detach()
        loading = loc.new_zeros(sizes[name], total)
        if name in owners:
            block, offset = blocks[owners[name]], offsets[owners[name]]
            loading[:, offset : offset + block.shape[1]] = block
        edges = get_nested(guide.deps, name)
        for upstream, kind in guide.dependencies.get(name, {}).items():
            edge = get_nested(edges, upstream)
            if not isinstance(edge, torch.nn.Linear) or not isinstance(kind, str):
                raise NotImplementedError(
                    f"site {name!r} depends on {upstream!r} through a callable, so "
                    "its quantiles are not Gaussian; use guide.median() or sample "
                    "the guide instead"
                )
            loading = loading + edge.weight.detach() @ loadings[upstream]
        loadings[name] = loading
        stds[name] = loading.pow(2).sum(-1).sqrt()
    return stds
