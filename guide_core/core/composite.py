"""Composing guides: :class:`AutoGuideList` and :class:`AutoCallable`."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.guide import GuideMessenger
from torch import nn

from .guide import AutoGuide
from .messenger import AutoMessenger
from .summaries import as_quantiles, point_quantiles

__all__ = ["AutoCallable", "AutoGuideList"]


def _no_median(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
    return {}


def _is_observed(msg: dict) -> bool:
    return msg["type"] == "sample" and bool(msg["is_observed"])


def _latent_median(
    guide: AutoMessenger, *args: Any, **kwargs: Any
) -> dict[str, torch.Tensor]:
    # A messenger's median also holds the model's observed sites; a part's
    # median holds only the latent sites it guides.
    return guide._latent_values(guide.median(*args, **kwargs))


class AutoCallable(AutoGuide):
    """Wraps a plain callable guide so it can be a part of an :class:`AutoGuideList`.

    Parameters
    ----------
    model : callable
        A Pyro model.
    guide : callable
        A Pyro guide, usually covering only part of the model's sites.
    median : callable, optional
        Returns ``{site name: median tensor}`` for the sites ``guide`` covers;
        by default ``guide.median`` if the guide has one (a messenger guide
        does), else the part contributes no medians.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        median: Callable[..., dict[str, torch.Tensor]] = _no_median,
    ):
        if not callable(guide):
            raise TypeError(f"'guide' must be callable: {guide!r}")
        super().__init__(model)
        self._guide = guide
        if median is _no_median and callable(getattr(guide, "median", None)):
            median = guide.median
            if isinstance(guide, AutoMessenger):
                median = functools.partial(_latent_median, guide)
        self.median = median

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Run the wrapped guide; return its result, or ``{}`` if it returns None."""
        if isinstance(poutine.unwrap(self._guide), GuideMessenger):
            # A messenger runs the model: its observed sites are not the guide's.
            with poutine.block(hide_fn=_is_observed):
                result = self._guide(*args, **kwargs)
        else:
            result = self._guide(*args, **kwargs)
        return {} if result is None else result

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load at once: a wrapped guide has no prototype to wait for."""
        return self._load_now(state_dict, strict)

    def quantiles(
        self, quantiles: Sequence[float] | torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Return the guide's quantiles if it has them, else its median at every
        level."""
        own = getattr(self._guide, "quantiles", None)
        if callable(own):
            return own(quantiles, *args, **kwargs)
        q = as_quantiles(quantiles)
        median = self.median(*args, **kwargs)
        return point_quantiles(median, q)


def _describe(index: int, part: nn.Module) -> str:
    return f"part {index} ({type(part).__name__})"


class AutoGuideList(AutoGuide, nn.ModuleList):
    """A guide made of parts, each covering its own subset of the model's sites.

    Build each part on a blocked model so that no two parts share a site::

        guide = AutoGuideList(model)
        guide.append(AutoNormal(poutine.block(model, hide=["assignment"])))
        guide.append(AutoDiscreteParallel(poutine.block(model, expose=["assignment"])))

    A part whose class sets ``conditions_on_other_parts = True`` (AutoDAIS)
    targets the model conditioned on what the other parts drew: the list runs
    it after them and gives it their values through :meth:`_given_other_parts`.
    At most one part may do so.

    Parameters
    ----------
    model : callable
        A Pyro model.
    create_plates : callable, optional
        As for :class:`AutoGuide`; shared by all parts.
    """

    def __init__(self, model: Callable, *, create_plates: Callable | None = None):
        super().__init__(model, create_plates=create_plates)
        self._devices_checked = False
        self._sampled: dict[str, torch.Tensor] | None = None

    def append(self, part: AutoGuide | Callable) -> None:
        """Add a guide for part of the model; a plain callable is wrapped.

        Raises
        ------
        ValueError
            If ``part`` already belongs to a guide list.
        """
        if not isinstance(part, AutoGuide):
            part = AutoCallable(self.model, part)
        if part.master is not None:
            raise ValueError(
                f"{type(part).__name__} is already a part of a guide list; build a "
                "new guide for each list"
            )
        setattr(self, str(len(self)), part)
        self._devices_checked = False

    def add(self, part: AutoGuide | Callable) -> None:
        """Deprecated alias of :meth:`append`."""
        warnings.warn(
            "AutoGuideList.add() is deprecated; use append()",
            DeprecationWarning,
            stacklevel=2,
        )
        self.append(part)

    def _check_prototype(self, part_trace: Any) -> None:
        """Check that a part sees each of its sites with the model's shapes."""
        for name, part_site in part_trace.iter_stochastic_nodes():
            if name not in self.prototype_trace.nodes:
                raise ValueError(
                    f"a part of this AutoGuideList has site {name!r}, which the "
                    "list's model does not sample; build each part on "
                    "poutine.block(model, ...) of the same model"
                )
            site = self.prototype_trace.nodes[name]
            for what in ("batch_shape", "event_shape"):
                ours, theirs = getattr(site["fn"], what), getattr(part_site["fn"], what)
                if ours != theirs:
                    raise ValueError(
                        f"site {name!r} has {what} {tuple(theirs)} in a part but "
                        f"{tuple(ours)} in the list's model; the part must be built "
                        "on the same model"
                    )

    def _check_devices(self) -> None:
        devices: dict[torch.device, list[str]] = {}
        for index, part in enumerate(self):
            for p in part.parameters():
                devices.setdefault(p.device, []).append(_describe(index, part))
                break
        if len(devices) > 1:
            where = "; ".join(f"{', '.join(v)} on {k}" for k, v in devices.items())
            raise RuntimeError(
                f"the parts of this AutoGuideList are on different devices: {where}; "
                "move the whole list with guide.to(device)"
            )
        self._devices_checked = all(any(True for _ in p.parameters()) for p in self)

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> AutoGuideList:
        self._devices_checked = False
        return super()._apply(fn, *args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Run every part; return ``{site name: value}`` over all of them."""
        self._ensure_setup(*args, **kwargs)
        self._create_plates(*args, **kwargs)
        if not self._devices_checked:
            self._check_devices()
        result: dict[str, torch.Tensor] = {}
        self._sampled = result
        try:
            for part in self._ordered_parts():
                result.update(part(*args, **kwargs))
        finally:
            self._sampled = None
        return result

    def _ordered_parts(self) -> list[nn.Module]:
        """The parts, those that condition on the others last."""
        later = [p for p in self if getattr(p, "conditions_on_other_parts", False)]
        if len(later) > 1:
            names = ", ".join(
                _describe(i, p)
                for i, p in enumerate(self)
                if any(p is q for q in later)
            )
            raise ValueError(
                f"{names} each target the model conditioned on the other parts' "
                "values, so neither can run before the other; keep one of them and "
                "guide the other sites with a part that does not (e.g. AutoNormal)"
            )
        return [p for p in self if not any(p is q for q in later)] + later

    def _given_other_parts(self, part: nn.Module) -> tuple[Callable, dict[str, Any]]:
        """The list's model and what to condition it on for ``part``'s target:
        the values the other parts drew in this call and the indices of the
        list's subsampled plates.

        Raises
        ------
        RuntimeError
            Outside a call of the list (or of :meth:`_other_parts_drawn`).
        """
        if self._sampled is None:
            raise RuntimeError(
                f"{type(part).__name__} is a part of an AutoGuideList and targets the "
                "model given the other parts' values; call the whole list, not the "
                "part alone"
            )
        given: dict[str, Any] = dict(self._sampled)
        for name, plate in getattr(self, "plates", {}).items():
            indices = getattr(plate, "_indices", None)
            if indices is not None:
                given[name] = indices
        return self.model, given

    @contextlib.contextmanager
    def _other_parts_drawn(
        self, part: nn.Module, *args: Any, **kwargs: Any
    ) -> Iterator[None]:
        """Draw every part but ``part`` (hidden from outer handlers), so that
        ``part`` can be run alone, e.g. for its sampled summaries."""
        values: dict[str, torch.Tensor] = {}
        with poutine.block():
            self._create_plates(*args, **kwargs)
            for other in self:
                if other is not part:
                    values.update(other(*args, **kwargs))
        self._sampled = values
        try:
            yield
        finally:
            self._sampled = None

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load each part's state (also into parts not called yet)."""
        for index, part in enumerate(self):
            prefix = f"{index}."
            sub = {
                k[len(prefix) :]: v
                for k, v in state_dict.items()
                if k.startswith(prefix)
            }
            part.load_state_dict(sub, strict=strict)
        if strict:
            unknown = [
                k
                for k in state_dict
                if not k.split(".")[0].isdigit() or int(k.split(".")[0]) >= len(self)
            ]
            if unknown:
                raise KeyError(f"unexpected keys for this AutoGuideList: {unknown}")
        return torch.nn.modules.module._IncompatibleKeys([], [])

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Return every part's state, prefixed by its index."""
        if args or kwargs:
            return super().state_dict(*args, **kwargs)
        out: dict[str, Any] = {}
        for index, part in enumerate(self):
            out.update({f"{index}.{k}": v for k, v in part.state_dict().items()})
        return out

    def _median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        result: dict[str, torch.Tensor] = {}
        for index, part in enumerate(self):
            if getattr(part, "median", None) is _no_median:
                warnings.warn(
                    f"{_describe(index, part)} has no median and is skipped; pass "
                    "median= to AutoCallable to include its sites",
                    stacklevel=3,
                )
                continue
            try:
                result.update(part.median(*args, **kwargs))
            except NotImplementedError as exc:
                warnings.warn(
                    f"{_describe(index, part)} has no median and is skipped: {exc}",
                    stacklevel=3,
                )
        return result

    def _quantiles(
        self, q: torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        result: dict[str, torch.Tensor] = {}
        for index, part in enumerate(self):
            quantiles = getattr(part, "quantiles", None)
            if getattr(part, "median", None) is _no_median:
                warnings.warn(
                    f"{_describe(index, part)} has no median or quantiles and is "
                    "skipped; pass median= to AutoCallable to include its sites",
                    stacklevel=3,
                )
                continue
            try:
                if quantiles is None:
                    raise NotImplementedError("it defines no quantiles()")
                result.update(quantiles(q, *args, **kwargs))
                continue
            except NotImplementedError as exc:
                reason = str(exc)
            try:
                median = part.median(*args, **kwargs)
            except NotImplementedError:
                warnings.warn(
                    f"{_describe(index, part)} has neither quantiles nor a median "
                    f"and is skipped: {reason}",
                    stacklevel=3,
                )
                continue
            warnings.warn(
                f"{_describe(index, part)} has no quantiles; its median stands in "
                f"at every level: {reason}",
                stacklevel=3,
            )
            result.update(point_quantiles(median, q))
        return result
