"""The handler that starts a model at an init strategy's values.

:class:`InitMessenger` gives every unset latent site the value an init
strategy (:mod:`.initialization`) chooses, checking what it returns;
:func:`support_errors` turns a support with no map to unconstrained space into
an error that names the site and the fix; :func:`unwrap_init` takes the
handlers a guide wrapped around its model off again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from pyro.infer.util import is_validation_enabled
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

__all__ = ["InitMessenger", "support_errors", "unwrap_init"]

InitStrategy = Callable[[dict], torch.Tensor]


@contextmanager
def support_errors(site: dict) -> Iterator[None]:
    """Re-raise a ``NotImplementedError`` about a site's support as ``ValueError``.

    ``biject_to``/``transform_to`` raise ``NotImplementedError`` for supports
    with no map to unconstrained space. The ``ValueError`` names the site and
    shows the fix: enumerate-and-hide for discrete sites, a
    ``ProjectedNormalReparam`` for spherical ones.

    Parameters
    ----------
    site : dict
        The sample site being handled; needs ``"name"`` and ``"fn"``.
    """
    try:
        yield
    except NotImplementedError as exc:
        name = site["name"]
        try:
            support = site["fn"].support
        except NotImplementedError:
            support = None
        if support is not None and support.is_discrete:
            raise ValueError(
                f"continuous inference cannot handle the discrete sample site {name!r} "
                f"(support {support}). Enumerate it (e.g. "
                "infer={'enumerate': 'parallel'} with TraceEnum_ELBO, see "
                "https://pyro.ai/examples/enumeration.html) and hide it from the "
                f"guide: guide = AutoNormal(poutine.block(model, hide=[{name!r}]))"
            ) from None
        if "sphere" in repr(support).lower():
            raise ValueError(
                "continuous inference cannot handle the spherical sample site "
                f"{name!r} directly. Give it a ProjectedNormal prior and "
                "reparametrize: model = poutine.reparam(model, "
                f"config={{{name!r}: ProjectedNormalReparam()}})"
            ) from None
        raise ValueError(
            f"site {name!r} has support {support!r}, which cannot be mapped to "
            f"unconstrained space ({exc}); give it a supported prior or hide it "
            f"from the guide with poutine.block(model, hide=[{name!r}])"
        ) from exc


def _describe(fn: Any) -> str:
    # A short name for a strategy, e.g. "init_to_median(num_samples=15, ...)".
    if isinstance(fn, functools.partial):
        options = ", ".join(f"{k}={_describe(v)}" for k, v in fn.keywords.items())
        return f"{_describe(fn.func)}({options})"
    if isinstance(fn, Mapping):
        return "{" + ", ".join(f"{k!r}: ..." for k in fn) + "}"
    return getattr(fn, "__name__", None) or repr(fn)


class InitMessenger(Messenger):
    """Give each unset latent sample site the value chosen by ``init_fn``.

    Sites that already have a value (observed, conditioned, replayed) and
    subsample sites are left alone, so applying it twice is harmless. Under
    Pyro validation, a value that is not a tensor of the distribution's
    ``batch_shape + event_shape`` is a ``ValueError`` naming site and strategy.

    Parameters
    ----------
    init_fn : callable
        An init strategy such as :func:`init_to_median`.
    """

    def __init__(self, init_fn: InitStrategy):
        self.init_fn = init_fn
        super().__init__()

    def _pyro_sample(self, msg: dict) -> None:
        if msg["value"] is not None or site_is_subsample(msg):
            return
        with torch.no_grad(), support_errors(msg):
            value = self.init_fn(msg)
        if is_validation_enabled():
            self._validate(msg, value)
        msg["value"] = value

    def _validate(self, msg: dict, value: Any) -> None:
        # If the strategy wrote a value into the message, that is the reference.
        if msg["value"] is not None:
            kind, shape = type(msg["value"]), msg["value"].shape
        else:
            kind, fn = torch.Tensor, msg["fn"]
            shape = getattr(fn, "batch_shape", ()) + getattr(fn, "event_shape", ())
        who, name, got = _describe(self.init_fn), msg["name"], type(value).__name__
        if not isinstance(value, kind):
            raise ValueError(
                f"init strategy {who} returned a {got} for site {name!r}; "
                f"expected {kind.__name__}, actual {got}"
            )
        if value.shape != shape:
            raise ValueError(
                f"init strategy {who} returned a value of shape {tuple(value.shape)} "
                f"for site {name!r}; expected shape {tuple(shape)} (batch_shape + "
                f"event_shape of its distribution), actual {tuple(value.shape)}"
            )

    def _pyro_get_init_messengers(self, msg: dict) -> None:
        # Lets ReparamMessenger apply enclosing init handlers ahead of itself.
        if msg["value"] is None:
            msg["value"] = []
        msg["value"].append(self)


def unwrap_init(model: Callable) -> Callable:
    """``model`` without the :class:`InitMessenger` wrappers a guide puts
    around it (``InitMessenger(fn)(model)`` is a partial over both)."""
    while (
        isinstance(model, functools.partial)
        and len(model.args) == 2
        and isinstance(model.args[0], InitMessenger)
        and callable(model.args[1])
    ):
        model = model.args[1]
    return model
