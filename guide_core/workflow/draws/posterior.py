"""Posterior draws from a fitted guide, their summary, and ArviZ export."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch

from ...core.draws import draw_sites
from ...core.summaries import as_quantiles
from ...registry.errors import MissingExtraError

__all__ = [
    "SiteSummary",
    "Summary",
    "posterior_draws",
    "sample_posterior",
    "summary",
    "to_inference_data",
]


def sample_posterior(
    guide: Callable,
    *args: Any,
    num_samples: int = 1000,
    model: Callable | None = None,
    **kwargs: Any,
) -> dict[str, torch.Tensor]:
    """Draw from a guide and return every latent and deterministic site of the model.

    Each draw runs the guide and replays the model against it, so sites made by
    ``pyro.deterministic`` are computed from the guide's latents, and latent
    sites the guide does not cover (e.g. in a guide for part of a model) are
    drawn from the model given the guide's draws; for a discrete site that is
    enumerated in the model rather than guided, that is its prior given the
    other latents, not its posterior (use ``pyro.infer.infer_discrete`` for
    that). The draws are taken all at
    once under an outer ``pyro.plate`` when model and guide vectorize, else one
    at a time.

    Parameters
    ----------
    guide : callable
        A guide: an :class:`~guide_core.AutoGuide`, an
        :class:`~guide_core.AutoGuideList`, an :class:`~guide_core.AutoMessenger`
        or any Pyro guide (then pass ``model``).
    *args, **kwargs :
        The model's arguments.
    num_samples : int
        The number of draws.
    model : callable, optional
        The model; by default the one the guide was built for.

    Returns
    -------
    dict
        ``{site name: tensor}``, each with ``num_samples`` on dim 0 followed by
        the site's shape.
    """
    return draw_sites(guide, args, kwargs, num_samples=num_samples, model=model)


@attrs.frozen
class SiteSummary:
    """Posterior mean, standard deviation and quantiles of one site (elementwise).

    ``quantiles`` holds the levels of the :class:`Summary` on dim 0.
    """

    mean: torch.Tensor
    sd: torch.Tensor
    quantiles: torch.Tensor


def _quantiles(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Quantiles along dim 0, interpolating linearly between order statistics."""
    x = x.sort(dim=0).values
    pos = levels.to(x) * (x.shape[0] - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=x.shape[0] - 1)
    frac = (pos - lo.to(x)).reshape((-1,) + (1,) * (x.dim() - 1))
    return x[lo] + frac * (x[hi] - x[lo])


def _label(level: float) -> str:
    return f"{100 * level:g}%"


def _fmt(x: float) -> str:
    return f"{x:.4g}"


@attrs.frozen
class Summary(Mapping[str, SiteSummary]):
    """Per-site posterior summaries; a read-only mapping ``{site: SiteSummary}``.

    Attributes
    ----------
    sites : dict
        ``{site name: SiteSummary}`` in the model's order.
    levels : tuple of float
        The quantile levels, in the order of ``SiteSummary.quantiles``.
    num_samples : int
        The number of draws summarised.
    """

    sites: dict[str, SiteSummary]
    levels: tuple[float, ...]
    num_samples: int

    def __getitem__(self, name: str) -> SiteSummary:
        try:
            return self.sites[name]
        except KeyError:
            raise KeyError(
                f"no site {name!r} in the summary; sites: {', '.join(self.sites)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.sites)

    def __len__(self) -> int:
        return len(self.sites)

    def table(self, max_elements: int = 10) -> str:
        """Return a printable table with one row per scalar element of each site.

        Parameters
        ----------
        max_elements : int
            At most this many rows per site; the rest are counted in a line
            such as ``... 90 more elements of theta``.
        """
        header = ["site", "mean", "sd", *(_label(q) for q in self.levels)]
        rows: list[list[str]] = []
        notes: dict[int, str] = {}
        for name, s in self.sites.items():
            shape = tuple(s.mean.shape)
            count = math.prod(shape)
            mean, sd = s.mean.reshape(-1), s.sd.reshape(-1)
            qs = s.quantiles.reshape(len(self.levels), -1)
            for i in range(min(count, max_elements)):
                index = ""
                if shape:
                    index = "[" + ",".join(map(str, _unravel(i, shape))) + "]"
                cells = [mean[i], sd[i], *qs[:, i]]
                rows.append([name + index, *(_fmt(float(c)) for c in cells)])
            if count > max_elements:
                notes[len(rows)] = f"... {count - max_elements} more elements of {name}"
        widths = [len(h) for h in header]
        for row in rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row)]
        lines = [_row(header, widths), "  ".join("-" * w for w in widths)]
        for i, row in enumerate(rows, 1):
            lines.append(_row(row, widths))
            if i in notes:
                lines.append(notes[i])
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _unravel(index: int, shape: tuple[int, ...]) -> list[int]:
    out = []
    for size in reversed(shape):
        out.append(index % size)
        index //= size
    return out[::-1]


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths))
    )


def _samples(
    source: Any, args: tuple, num_samples: int, kwargs: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """Return ``source`` if it is already ``{site: draws}``, else draw from it."""
    if isinstance(source, Mapping):
        if args or kwargs:
            raise TypeError(
                "model arguments were given with a dict of samples; pass either a "
                "guide and the model's arguments, or the samples alone"
            )
        samples = dict(source)
        for name, value in samples.items():
            if not isinstance(value, torch.Tensor) or value.dim() == 0:
                raise ValueError(
                    f"samples[{name!r}] must be a tensor with the draws on dim 0, "
                    f"got {type(value).__name__} {getattr(value, 'shape', '')}"
                )
        return samples
    if callable(source):
        return sample_posterior(source, *args, num_samples=num_samples, **kwargs)
    raise TypeError(
        f"expected a guide or a dict {{site name: tensor of draws}}, got "
        f"{type(source).__name__}"
    )


def posterior_draws(
    guide: Callable, *args: Any, num_samples: int = 1000, **kwargs: Any
) -> dict[str, torch.Tensor]:
    """Draw from the posterior a guide stands for (what a plot should show).

    The same as :func:`sample_posterior`, except for a guide with a
    ``laplace_approximation`` (``AutoLaplaceApproximation``): it is trained as
    a point, and its posterior is the Gaussian at that point, so the draws come
    from that Gaussian (the point itself where the Hessian cannot be had).
    """
    laplace = getattr(guide, "laplace_approximation", None)
    if callable(laplace):
        try:
            guide = laplace(*args, **kwargs)
        except Exception:  # noqa: BLE001 - e.g. a singular Hessian: show the point
            pass
    return sample_posterior(guide, *args, num_samples=num_samples, **kwargs)


def summary(
    samples_or_guide: Any,
    *args: Any,
    num_samples: int = 1000,
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    **kwargs: Any,
) -> Summary:
    """Summarise posterior draws: mean, sd and quantiles of each site.

    Parameters
    ----------
    samples_or_guide : dict or guide
        ``{site name: tensor}`` with the draws on dim 0 (as returned by
        :func:`sample_posterior`), or a guide to draw ``num_samples`` from.
    *args, **kwargs :
        The model's arguments, when a guide is given.
    num_samples : int
        The number of draws taken from a guide.
    quantiles : sequence of float
        Levels in ``[0, 1]``.

    Returns
    -------
    Summary
        Print it, or call :meth:`Summary.table`, for a table.
    """
    levels = as_quantiles(quantiles, like=torch.zeros((), dtype=torch.float64))
    samples = _samples(samples_or_guide, args, num_samples, kwargs)
    sites = {}
    n = 0
    for name, value in samples.items():
        x = value.detach().to(torch.float64)
        n = max(n, x.shape[0])
        sd = x.std(dim=0) if x.shape[0] > 1 else torch.full_like(x[0], math.nan)
        sites[name] = SiteSummary(x.mean(dim=0), sd, _quantiles(x, levels))
    return Summary(sites, tuple(levels.tolist()), n)


def to_inference_data(
    guide_or_samples: Any, *args: Any, num_samples: int = 1000, **kwargs: Any
) -> Any:
    """Export posterior draws to an ArviZ ``InferenceData`` (one chain).

    Parameters
    ----------
    guide_or_samples : guide or dict
        A guide to draw ``num_samples`` from, or ``{site: draws}``.
    *args, **kwargs :
        The model's arguments, when a guide is given.
    num_samples : int
        The number of draws taken from a guide.

    Returns
    -------
    arviz.InferenceData
        The draws in its ``posterior`` group.

    Raises
    ------
    MissingExtraError
        If ArviZ is not installed (``pip install 'guide-core[arviz]'``).
    """
    try:
        import arviz
    except ImportError:
        raise MissingExtraError(
            "to_inference_data needs ArviZ, which is not installed; install it "
            "with: pip install 'guide-core[arviz]'"
        ) from None
    samples = _samples(guide_or_samples, args, num_samples, kwargs)
    posterior = {
        name: value.detach().cpu().numpy()[None] for name, value in samples.items()
    }
    return arviz.from_dict(posterior=posterior)
