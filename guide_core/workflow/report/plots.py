"""Figures of a fit and of a comparison, as matplotlib ``Figure`` objects.

The figures are built on matplotlib's Agg canvas without ``pyplot``: nothing
opens a window or changes the backend a notebook uses, and a notebook shows a
returned figure as it shows any other. matplotlib is the ``plot`` extra.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ...registry.checks import require_extras
from ..draws.posterior import posterior_draws
from ..fitting.loop import FitResult
from .comparison import Comparison, objective_of

__all__ = ["MAX_ELEMENTS", "plot_compare", "plot_fit", "require_matplotlib"]

#: At most this many elements of one site are drawn; the rest are summarised.
MAX_ELEMENTS = 12
_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)


def require_matplotlib(what: str = "plotting") -> None:
    """Raise :class:`~guide_core.MissingExtraError` unless matplotlib is installed."""
    require_extras(what, ["matplotlib"], "guide-core[plot]")


def _figure(width: float, height: float) -> Any:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def smooth(losses: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean of ``losses`` over at most ``window`` steps."""
    sums = np.cumsum(np.concatenate([[0.0], losses]))
    idx = np.arange(1, len(losses) + 1)
    lo = np.maximum(idx - window, 0)
    return (sums[idx] - sums[lo]) / (idx - lo)


def _loss_limits(losses: np.ndarray) -> tuple[float, float] | None:
    """A y-range that shows the end of the fit, not the first few steps."""
    finite = losses[np.isfinite(losses)]
    if finite.size < 10:
        return None
    late = finite[len(finite) // 10 :]
    lo, hi = float(late.min()), float(np.quantile(late, 0.98))
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def _draw_loss(ax: Any, result: FitResult, label: str, window: int, **style: Any):
    losses = np.asarray(result.losses, dtype=float)
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, smooth(losses, window), label=label, **style)
    return losses


def plot_fit(
    result: FitResult,
    *args: Any,
    num_samples: int = 500,
    max_elements: int = MAX_ELEMENTS,
    window: int = 50,
    **kwargs: Any,
) -> dict[str, Any]:
    """Figures of one fit: its loss curve, the posterior marginals and the k-hat.

    Parameters
    ----------
    result : FitResult
        What :func:`~guide_core.fit` returned.
    *args, **kwargs :
        The model's arguments, to draw from the guide.
    num_samples : int
        Draws for the marginals.
    max_elements : int
        At most this many elements of a site are drawn; a line of text counts
        the rest.
    window : int
        Steps of the smoothed loss.

    Returns
    -------
    dict
        ``{"loss": Figure, "posterior": Figure, "khat": Figure}`` (no
        ``"khat"`` if the fit has none).

    Raises
    ------
    MissingExtraError
        If matplotlib is not installed (``pip install 'guide-core[plot]'``).
    """
    require_matplotlib("plot_fit")
    figures = {"loss": _loss_figure(result, window)}
    samples = posterior_draws(result.guide, *args, num_samples=num_samples, **kwargs)
    figures["posterior"] = _posterior_figure(samples, max_elements)
    if result.khat is not None:
        figures["khat"] = _khat_figure(result.khat)
    return figures


def _loss_figure(result: FitResult, window: int) -> Any:
    fig = _figure(7.0, 3.6)
    ax = fig.add_subplot()
    losses = np.asarray(result.losses, dtype=float)
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color="0.65", linewidth=0.8, label="loss (each step)")
    _draw_loss(ax, result, f"smoothed ({window} steps)", window, color="C0")
    if result.converged:
        ax.axvline(
            result.steps,
            color="C2",
            linestyle="--",
            label=f"converged, step {result.steps}",
        )
    limits = _loss_limits(losses)
    if limits:
        ax.set_ylim(*limits)
    rate = 1000.0 / result.ms_per_step if result.ms_per_step > 0 else math.nan
    what = {"elbo": "-ELBO", "map": "-log p(x, z), MAP", "laplace": "-log p(x, z), MAP"}
    ax.set_title(
        f"loss ({what[objective_of(result.guide)]}): {result.steps} steps, "
        f"{rate:.0f} steps/s ({result.engine} engine)"
    )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right", fontsize="small")
    return fig


def _flat(samples: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    out = {}
    for name, value in samples.items():
        x = value.detach().to(torch.float64).cpu().numpy()
        out[name] = x.reshape(x.shape[0], -1)
    return out


def _element_labels(shape: tuple[int, ...], count: int) -> list[str]:
    if not shape:
        return [""]
    labels = []
    for i in range(count):
        index = np.unravel_index(i, shape)
        labels.append("[" + ",".join(str(int(j)) for j in index) + "]")
    return labels


def density(x: np.ndarray, points: int = 200) -> tuple[np.ndarray, np.ndarray] | None:
    """A Gaussian kernel density of ``x`` (Silverman's bandwidth) on a grid;
    ``None`` for draws without spread (a point mass)."""
    x = x[np.isfinite(x)]
    sd = float(x.std()) if x.size > 1 else 0.0
    if sd <= 1e-12 * max(1.0, abs(float(x.mean())) if x.size else 1.0):
        return None
    iqr = float(np.subtract(*np.quantile(x, [0.75, 0.25])))
    spread = min(sd, iqr / 1.34) if iqr > 0 else sd
    h = 0.9 * spread * x.size ** (-0.2)
    grid = np.linspace(x.min() - 3 * h, x.max() + 3 * h, points)
    z = (grid[:, None] - x[None, :]) / h
    return grid, np.exp(-0.5 * z**2).sum(1) / (x.size * h * math.sqrt(2 * math.pi))


def _posterior_figure(samples: Mapping[str, torch.Tensor], max_elements: int) -> Any:
    flat = _flat(samples)
    shown = {n: min(v.shape[1], max_elements) for n, v in flat.items()}
    heights = [2.2 if shown[n] == 1 else 0.9 + 0.28 * shown[n] for n in flat]
    fig = _figure(7.0, max(2.5, sum(heights) + 0.3))
    axes = fig.subplots(len(flat), 1, squeeze=False, height_ratios=heights or None)
    for ax, (name, x) in zip(axes[:, 0], flat.items()):
        shape = tuple(samples[name].shape[1:])
        count = x.shape[1]
        if count == 1:
            curve = density(x[:, 0])
            if curve is None:
                ax.axvline(float(x[0, 0]), color="C0", label="point mass")
                ax.legend(fontsize="small")
            else:
                ax.plot(*curve, color="C0")
                ax.fill_between(*curve, alpha=0.2, color="C0")
            ax.set_ylabel("density")
            ax.set_yticks([])
        else:
            _intervals(ax, x[:, : shown[name]], [0.0] * shown[name], "C0")
            ax.set_yticks(range(shown[name]))
            ax.set_yticklabels(_element_labels(shape, shown[name]))
            ax.invert_yaxis()
        title = f"{name} {list(shape)}" if shape else name
        ax.set_title(title, loc="left", fontsize="medium")
        if count > shown[name]:
            rest = x[:, shown[name] :].mean(0)
            ax.set_xlabel(
                f"... {count - shown[name]} more elements, posterior means "
                f"{rest.min():.3g} to {rest.max():.3g}"
            )
    return fig


def _color(i: int, count: int) -> Any:
    """A distinct colour for each of ``count`` guides (tab10, else tab20)."""
    from matplotlib import colormaps

    return colormaps["tab10" if count <= 10 else "tab20"](i % 20)


def _intervals(
    ax: Any,
    x: np.ndarray,
    offsets: list[float],
    color: Any,
    marker: str = "o",
    **kw: Any,
) -> None:
    """One 90% line, one thicker 50% line and a median point per column of ``x``."""
    q = np.quantile(x, _LEVELS, axis=0)
    y = np.arange(x.shape[1]) + np.asarray(offsets)
    ax.hlines(y, q[0], q[4], color=color, linewidth=1.2, **kw)
    ax.hlines(y, q[1], q[3], color=color, linewidth=3.5)
    ax.plot(q[2], y, marker, color=color, markersize=3.5)


def _khat_figure(khat: Any) -> Any:
    fig = _figure(7.0, 1.4)
    ax = fig.add_subplot()
    right = max(1.0, khat.value + 0.1) if math.isfinite(khat.value) else 1.0
    for (lo, hi), color, word in (
        ((-0.5, 0.5), "#c7e9c0", "good"),
        ((0.5, 0.7), "#fdd0a2", "ok"),
        ((0.7, right + 0.5), "#fcbba1", "bad"),
    ):
        ax.axvspan(lo, hi, color=color)
        ax.text(
            (max(lo, -0.2) + min(hi, right)) / 2,
            0.5,
            word,
            ha="center",
            va="center",
            transform=ax.get_xaxis_transform(),
            color="0.3",
        )
    shown = khat.value if math.isfinite(khat.value) else right
    ax.axvline(shown, color="k", linewidth=2.5)
    ax.set_xlim(-0.2, right)
    ax.set_yticks([])
    note = f": {khat.note}" if khat.note else ""
    ax.set_title(
        f"PSIS k-hat {khat.value:.2f} ({khat.verdict}{note})", fontsize="medium"
    )
    return fig


def _entries(results: Any) -> list[tuple[str, FitResult, str]]:
    if isinstance(results, Comparison):
        return [(e.name, e.result, e.objective) for e in results.entries if e.result]
    if isinstance(results, Mapping):
        return [(n, r, objective_of(r.guide, n)) for n, r in results.items()]
    raise TypeError(
        "'results' must be a Comparison or a dict {name: FitResult}: "
        f"{type(results).__name__}"
    )


def plot_compare(
    results: Any,
    *args: Any,
    num_samples: int = 500,
    max_elements: int = MAX_ELEMENTS,
    window: int = 50,
    **kwargs: Any,
) -> dict[str, Any]:
    """Figures of several fits: one forest plot and every loss curve on one axis.

    Parameters
    ----------
    results : dict or Comparison
        ``{guide name: FitResult}``, or the comparison the command line builds.
    *args, **kwargs :
        The model's arguments, to draw from the guides.
    num_samples : int
        Draws per guide for the intervals.
    max_elements : int
        At most this many elements per site.
    window : int
        Steps of the smoothed losses.

    Returns
    -------
    dict
        ``{"forest": Figure, "loss": Figure}``: per site, each guide's median,
        50% and 90% intervals side by side (MAP and Laplace guides marked);
        each guide's smoothed loss (MAP objectives dashed).

    Raises
    ------
    MissingExtraError
        If matplotlib is not installed (``pip install 'guide-core[plot]'``).
    """
    require_matplotlib("plot_compare")
    entries = _entries(results)
    if not entries:
        raise ValueError("there is no fitted guide to plot")
    draws = {
        name: _flat(posterior_draws(r.guide, *args, num_samples=num_samples, **kwargs))
        for name, r, _ in entries
    }
    shapes = {}
    for name, _r, _ in entries:
        shapes.update(
            {s: v.shape[1] for s, v in draws[name].items() if s not in shapes}
        )
    return {
        "forest": _forest_figure(entries, draws, shapes, max_elements),
        "loss": _compare_loss_figure(entries, window),
    }


def _label(name: str, objective: str) -> str:
    return name if objective == "elbo" else f"{name} ({objective.upper()}, not an ELBO)"


def _forest_figure(entries, draws, shapes, max_elements) -> Any:
    g = len(entries)
    shown = {s: min(c, max_elements) for s, c in shapes.items()}
    heights = [0.6 + 0.09 * g * shown[s] + 0.1 * shown[s] for s in shapes]
    fig = _figure(8.0, sum(heights) + 0.4 + 0.2 * g)
    axes = fig.subplots(len(shapes), 1, squeeze=False, height_ratios=heights)
    step = 0.8 / max(g, 1)
    for ax, site in zip(axes[:, 0], shapes):
        n = shown[site]
        for i, (name, _, objective) in enumerate(entries):
            x = draws[name].get(site)
            if x is None:
                continue
            offsets = [-0.4 + step * (i + 0.5)] * n
            _intervals(
                ax,
                x[:, :n],
                offsets,
                _color(i, g),
                "o" if objective == "elbo" else "D",
                label=_label(name, objective),
            )
        ax.set_yticks(range(n))
        ax.set_yticklabels(
            [
                f"{site}{e}"
                for e in _element_labels((shapes[site],) if shapes[site] > 1 else (), n)
            ]
        )
        ax.invert_yaxis()
        ax.set_title(site, loc="left", fontsize="medium")
        if shapes[site] > n:
            ax.set_xlabel(f"... {shapes[site] - n} more elements not shown")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize="small")
    fig.suptitle("posterior medians, 50% and 90% intervals")
    return fig


def _compare_loss_figure(entries, window) -> Any:
    fig = _figure(8.0, 4.0 + 0.1 * len(entries))
    ax = fig.add_subplot()
    everything = []
    for i, (name, result, objective) in enumerate(entries):
        style = {"color": _color(i, len(entries)), "linewidth": 1.2}
        if objective != "elbo":
            style["linestyle"] = "--"
        losses = _draw_loss(ax, result, _label(name, objective), window, **style)
        everything.append(smooth(losses, window))
    limits = [lim for lim in map(_loss_limits, everything) if lim]
    if limits:
        # One guide with a wild loss must not flatten all the others.
        lo = min(lo for lo, _ in limits)
        tops = sorted(hi for _, hi in limits)
        typical = tops[len(tops) // 2]
        ax.set_ylim(lo, min(tops[-1], typical + 2 * (typical - lo)))
    ax.set_title(f"smoothed loss ({window} steps) of every guide; lower is better")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    fig.legend(loc="outside lower center", fontsize="x-small", ncols=2)
    return fig
