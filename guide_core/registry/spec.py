"""Frozen records of what plugins register: guides, init strategies, back ends.

A plugin never hands the registry a bare class; it hands it one of these records,
so the registry can validate it, list it and explain it without importing or
running anything else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["BackendSpec", "Capabilities", "GuideSpec", "InitStrategySpec"]
__all__ += ["OBJECTIVES", "Procedure", "ProcedureOutcome"]

#: What a guide's training loss estimates: ``"elbo"`` (an evidence lower bound,
#: comparable across guides), ``"map"`` (the log joint at a point: no entropy
#: term) or ``"laplace"`` (MAP, then a Gaussian around it).
OBJECTIVES = ("elbo", "map", "laplace")

_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def _snake_case(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or not _SNAKE.match(value):
        raise ValueError(
            f"{attribute.name!r} must be snake case such as 'auto_normal': {value!r}"
        )


def _callable(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not callable(value):
        raise TypeError(f"{attribute.name!r} must be callable: {value!r}")


def _nonempty(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name!r} must be a non-empty string: {value!r}")


def _str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@attrs.frozen
class Capabilities:
    """What a guide can handle, so tools can choose a guide per model.

    Attributes
    ----------
    continuous : bool
        Handles continuous latent sites.
    discrete : bool
        Handles discrete latent sites (with enumeration or its own distribution).
    subsample : bool
        Supports data subsampling and ``create_plates``/amortized plates.
    jit : bool
        Works under the ``Jit*`` ELBOs.
    mean_field : bool
        Its sites are independent, so ``TraceMeanField_ELBO`` may use analytic KL.
    median : bool
        Implements ``median``.
    quantiles : bool
        Implements ``quantiles``.
    """

    continuous: bool = True
    discrete: bool = False
    subsample: bool = False
    jit: bool = False
    mean_field: bool = False
    median: bool = True
    quantiles: bool = True

    def as_dict(self) -> dict[str, bool]:
        """Return the capabilities as a plain ``{name: flag}`` dict."""
        return attrs.asdict(self)


@attrs.frozen
class ProcedureOutcome:
    """What a guide's own fitting procedure did (see :attr:`GuideSpec.procedure`).

    Attributes
    ----------
    losses : tuple of float
        One loss per iteration, in the sense of the guide's objective (for
        Pathfinder: the negative ELBO estimate of each path's kept Gaussian).
    steps : int
        Iterations run (L-BFGS iterations, optimiser steps, ...).
    converged : bool
        Whether the procedure met its own stopping rule.
    gradient_evaluations : int
        Gradients of the log density computed: the cost to compare methods by.
    note : str
        What it did, in one line, for progress and reports.
    """

    losses: tuple[float, ...]
    steps: int
    converged: bool
    gradient_evaluations: int = 0
    note: str = ""


#: ``procedure(model, guide, args, kwargs, *, progress) -> ProcedureOutcome``:
#: fits ``guide`` in place, by something other than SVI.
Procedure = Callable[..., ProcedureOutcome]


@attrs.frozen
class GuideSpec:
    """One registered guide.

    Attributes
    ----------
    name : str
        Snake-case registry name, e.g. ``"auto_normal"``.
    factory : callable
        ``factory(model, **kwargs)`` builds the guide; usually the guide class.
    family : str
        The family it belongs to (``"normal"``, ``"continuous"``, ...).
    summary : str
        One line saying what the guide is.
    capabilities : Capabilities
        What the guide can handle.
    backends : tuple of str
        Names of the back ends it accepts (``AutoGaussian``), empty if none.
    extras : tuple of str
        Import names of extra packages it needs (e.g. ``("funsor",)``).
    objective : str
        What its training loss estimates, one of :data:`OBJECTIVES`:
        ``"elbo"`` (the default), ``"map"`` or ``"laplace"``. Only ELBOs are
        ranked against each other; a MAP loss has no entropy term.
    procedure : callable or None
        The guide's own fitting procedure, for a family not fitted by SVI
        (Pathfinder): ``procedure(model, guide, args, kwargs, *, progress)``
        fits the guide in place and returns a :class:`ProcedureOutcome`.
        ``guide_core.fit``, ``guide-core fit`` and ``compare`` run it instead
        of SVI. ``None`` (the default): the guide is fitted by SVI.
    plugin : str or None
        The plugin that registered it; filled in by the registry.
    """

    name: str = attrs.field(validator=_snake_case)
    factory: Callable[..., Any] = attrs.field(validator=_callable)
    family: str = attrs.field(validator=_nonempty)
    summary: str = attrs.field(validator=_nonempty)
    capabilities: Capabilities = attrs.field(
        factory=Capabilities, validator=attrs.validators.instance_of(Capabilities)
    )
    backends: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    extras: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    objective: str = attrs.field(
        default="elbo", validator=attrs.validators.in_(OBJECTIVES)
    )
    procedure: Procedure | None = attrs.field(
        default=None, validator=attrs.validators.optional(_callable)
    )
    plugin: str | None = None

    @property
    def class_name(self) -> str:
        """The drop-in class name, e.g. ``"AutoNormal"``."""
        return getattr(self.factory, "__name__", self.name)


@attrs.frozen
class InitStrategySpec:
    """One named initialization strategy, usable as ``init_loc_fn="median"``.

    Attributes
    ----------
    name : str
        Short snake-case name such as ``"median"``.
    strategy : callable
        The ``init_to_*`` function; called with no site it returns itself.
    summary : str
        One line saying what it does.
    plugin : str or None
        The plugin that registered it; filled in by the registry.
    """

    name: str = attrs.field(validator=_snake_case)
    strategy: Callable[..., Any] = attrs.field(validator=_callable)
    summary: str = attrs.field(validator=_nonempty)
    plugin: str | None = None


@attrs.frozen
class BackendSpec:
    """One AutoGaussian back end.

    Attributes
    ----------
    name : str
        Back-end name used as ``AutoGaussian(model, backend=name)``.
    factory : callable
        The guide class for this back end (e.g. ``AutoGaussianDense``).
    summary : str
        One line saying what it is good for.
    extras : tuple of str
        Import names of extra packages it needs.
    install_hint : str
        What to install when an extra is missing, e.g. ``"guide-core[funsor]"``.
    plugin : str or None
        The plugin that registered it; filled in by the registry.
    """

    name: str = attrs.field(validator=_snake_case)
    factory: Callable[..., Any] = attrs.field(validator=_callable)
    summary: str = attrs.field(validator=_nonempty)
    extras: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    install_hint: str = ""
    plugin: str | None = None
