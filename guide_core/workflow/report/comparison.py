"""Comparing fitted guides: what each one's objective is, and a fair table.

Only ELBOs are ranked against each other. A MAP guide (``AutoDelta``) or a
Laplace approximation trains the log joint at one point, which has no entropy
term: its "ELBO" is not a lower bound of anything and is usually far above the
real ones, so it is listed apart and never ranked. A guide that cannot apply to
the model (a ``ValueError`` or ``NotImplementedError`` while it is built or in
its first step) is "not applicable", not an error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from ...registry import default_registry
from ...registry.errors import RegistryError
from ..fitting.loop import FitResult

__all__ = [
    "KHAT_LEGEND",
    "Comparison",
    "Entry",
    "final_elbo",
    "objective_of",
]

#: What the PSIS k-hat verdicts mean, for tables and reports.
KHAT_LEGEND = (
    ("good", "< 0.5", "the guide is close to the posterior; its intervals are usable"),
    ("ok", "0.5-0.7", "usable with care; importance weights are heavy-tailed"),
    (
        "bad",
        "> 0.7",
        "the guide misses important parts of the posterior (or is a point mass)",
    ),
)

_LABELS = {"elbo": "ELBO", "map": "MAP", "laplace": "Laplace"}
_STEP = re.compile(r"raised by guide_core\.fit at step (\d+)")


def objective_of(guide: Any, name: str | None = None) -> str:
    """What the training loss of ``guide`` estimates: ``"elbo"``, ``"map"`` or
    ``"laplace"``.

    Parameters
    ----------
    guide : callable or None
        A guide; its class (or a base class) is looked up in the registry, and
        an :class:`~guide_core.AutoGuideList` is MAP if any part is not ELBO.
    name : str, optional
        The registry name, used first when given.

    Returns
    -------
    str
        One of :data:`guide_core.registry.spec.OBJECTIVES`; ``"elbo"`` for a
        guide the registry does not know.
    """
    reg = default_registry()
    if name is not None and name in reg.names():
        return reg.info(name).objective
    by_class = {spec.factory: spec.objective for spec in reg}
    for cls in type(guide).__mro__:
        if cls in by_class and by_class[cls] != "elbo":
            return by_class[cls]
    own = getattr(guide, "objective", None)
    if own in _LABELS:
        return own
    parts = list(guide) if isinstance(guide, Iterable) else []
    if any(objective_of(part) != "elbo" for part in parts):
        return "map"
    return "elbo"


def final_elbo(losses: Sequence[float], window: int = 50) -> float:
    """Minus the mean loss of the last ``window`` steps (NaN if none)."""
    tail = list(losses[-min(len(losses), window) :])
    return -math.fsum(tail) / len(tail) if tail else math.nan


@attrs.frozen
class Entry:
    """One guide in a comparison.

    Attributes
    ----------
    name : str
        The registry name.
    status : str
        ``"fitted"``, ``"not applicable"`` or ``"error"``.
    objective : str
        ``"elbo"``, ``"map"`` or ``"laplace"``.
    result : FitResult or None
        The fit, when there is one.
    seconds : float
        Wall time including the k-hat.
    reason : str
        Why it is not applicable, or the error, in one line.
    """

    name: str
    status: str
    objective: str = "elbo"
    result: FitResult | None = None
    seconds: float = math.nan
    reason: str = ""

    @property
    def value(self) -> float:
        """Minus the final smoothed loss: the ELBO, or the MAP log joint."""
        return final_elbo(self.result.losses) if self.result else math.nan

    @property
    def is_elbo(self) -> bool:
        """Whether it is fitted and its value is an ELBO (so it may be ranked)."""
        return self.status == "fitted" and self.objective == "elbo"

    @property
    def objective_label(self) -> str:
        """``"ELBO"``, ``"MAP"`` or ``"Laplace"``."""
        return _LABELS.get(self.objective, self.objective)


def _one_line(text: str, limit: int = 120) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _failed_step(exc: BaseException) -> int | None:
    for note in getattr(exc, "__notes__", ()):
        found = _STEP.search(note)
        if found:
            return int(found.group(1))
    return None


class Comparison:
    """Fitted guides side by side, ELBOs ranked apart from MAP/Laplace objectives.

    Parameters
    ----------
    label : str
        What was compared on, e.g. the model's name.
    """

    def __init__(self, label: str = ""):
        self.label = label
        self.entries: list[Entry] = []

    def add(self, name: str, result: FitResult, seconds: float = math.nan) -> Entry:
        """Add a fitted guide; its objective comes from the registry."""
        entry = Entry(name, "fitted", objective_of(result.guide, name), result, seconds)
        self.entries.append(entry)
        return entry

    def add_failure(
        self, name: str, exc: BaseException, seconds: float = math.nan
    ) -> Entry:
        """Add a guide that failed: "not applicable" for a ``ValueError`` or
        ``NotImplementedError`` while it was built or in its first step (the
        guide cannot apply to the model), else an error."""
        step = _failed_step(exc)
        about_model = isinstance(exc, (ValueError, NotImplementedError)) and not (
            isinstance(exc, RegistryError)
        )
        if about_model and (step is None or step <= 1):
            status, reason = "not applicable", _one_line(str(exc) or type(exc).__name__)
        else:
            status, reason = "error", _one_line(f"{type(exc).__name__}: {exc}")
        entry = Entry(name, status, objective_of(None, name), None, seconds, reason)
        self.entries.append(entry)
        return entry

    def results(self) -> dict[str, FitResult]:
        """``{name: FitResult}`` of the fitted guides, in the order added."""
        return {e.name: e.result for e in self.entries if e.result is not None}

    def ranked(self) -> list[Entry]:
        """The fitted ELBO guides, best (highest final ELBO) first."""
        elbos = [e for e in self.entries if e.is_elbo and math.isfinite(e.value)]
        return sorted(elbos, key=lambda e: -e.value)

    def best(self) -> Entry | None:
        """The guide with the highest final ELBO, if any."""
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def point_estimates(self) -> list[Entry]:
        """The fitted MAP and Laplace guides."""
        return [e for e in self.entries if e.status == "fitted" and not e.is_elbo]

    def unranked(self) -> list[Entry]:
        """Fitted ELBO guides without a finite ELBO, then the not applicable
        ones, then the errors."""
        odd = [e for e in self.entries if e.is_elbo and not math.isfinite(e.value)]
        return (
            odd
            + [e for e in self.entries if e.status == "not applicable"]
            + [e for e in self.entries if e.status == "error"]
        )

    def table(self) -> str:
        """Return the comparison as plain text: the ranked ELBOs (best marked),
        the guides that did not fit, the point estimates apart, and what the
        k-hat verdicts mean."""
        best = self.best()
        rows = [
            _cells(e, f"{e.value:.3f}" + (" *" if e is best else "  "))
            for e in self.ranked()
        ]
        rows += [_failed(e) for e in self.unranked()]
        out = [_text_table(("guide", "final ELBO", *_TAIL), rows)]
        if best is not None:
            out.append("* best ELBO (higher is better)")
        points = self.point_estimates()
        if points:
            out.append(
                "\nMAP / Laplace guides (their objective, log p(x, z) at one point, "
                "has no entropy term: it is not an ELBO and is not ranked with them)"
            )
            rows = [_cells(e, f"{e.value:.3f}", e.objective_label) for e in points]
            out.append(_text_table(("guide", "objective", "log p(x,z)", *_TAIL), rows))
        out.append("\nk-hat (PSIS):")
        out += [f"  {v:<4} {r:>7}  {m}" for v, r, m in KHAT_LEGEND]
        return "\n".join(out)


_TAIL = ("ms/step", "k-hat", "time s", "steps", "engine")


def khat_cell(result: FitResult | None) -> str:
    """The k-hat of a fit as ``"0.42 good"`` (``"-"`` if none)."""
    if result is None or result.khat is None:
        return "-"
    return f"{result.khat.value:.2f} {result.khat.verdict}"


def _cells(entry: Entry, value: str, *before: str) -> tuple[str, ...]:
    result = entry.result
    assert result is not None
    return (
        entry.name,
        *before,
        value,
        f"{result.ms_per_step:.2f}",
        khat_cell(result),
        f"{entry.seconds:.1f}",
        f"{result.steps}",
        result.engine,
    )


def _failed(entry: Entry) -> tuple[str, ...]:
    if entry.status == "fitted":  # an ELBO guide whose ELBO is not finite
        return _cells(entry, f"{entry.value:.3f}  ")
    prefix = "not applicable: " if entry.status == "not applicable" else "error: "
    return (entry.name, prefix + entry.reason)


def _text_table(header: Sequence[str], rows: list[tuple[str, ...]]) -> str:
    """A plain text table; a row of two cells is a guide and a note."""
    full = [r for r in rows if len(r) == len(header)]
    widths = [max([len(h), *(len(r[i]) for r in full)]) for i, h in enumerate(header)]
    widths[0] = max([widths[0], *(len(r[0]) for r in rows)])

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        )

    out = [line(header), "  ".join("-" * w for w in widths)]
    for row in rows:
        out.append(
            line(row)
            if len(row) == len(header)
            else f"{row[0].ljust(widths[0])}  {row[1]}"
        )
    return "\n".join(out)
