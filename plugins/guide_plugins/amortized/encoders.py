"""What an amortized site's encoder reads, and how its output becomes a Normal.

A local latent (one per cell, document, customer) gets its posterior from an
encoder of its plate's rows instead of one ``loc`` and ``scale`` per row:
:class:`RowReader` takes each row's input from the model's arguments (a named
or positional argument whose leading dimension indexes the plate, or a
callable of the arguments), keeps the rows of the current subsample, and
applies an optional transform such as ``torch.log1p``; :class:`SiteEncoder`
maps the rows through the site's ``nn.Module`` to a ``loc`` and a ``scale``
per row, around learned offsets that start at the initial location and at
``init_scale``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from pyro.nn.module import PyroModule, PyroParam, to_pyro_module_
from torch import nn

__all__ = ["EncoderArg", "RowReader", "SiteEncoder", "default_encoder", "make_encoder"]

#: A site's encoder: None (the default MLP), a module, a mapping from site
#: names to modules, or a factory ``(site, in_features, out_features) -> module``.
EncoderArg = nn.Module | Mapping[str, nn.Module] | Callable[..., nn.Module] | None


def default_encoder(
    in_features: int,
    out_features: int,
    hidden: tuple[int, ...],
    like: torch.Tensor | None = None,
) -> nn.Module:
    """An MLP with ``hidden`` widths and softplus activations, in the dtype and
    on the device of ``like`` (the site's values); its last layer starts at
    zero, so the guide starts at its offsets (``init_loc_fn``'s location and
    ``init_scale``)."""
    widths = (in_features, *hidden)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.Softplus()]
    last = nn.Linear(widths[-1], out_features)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    net = nn.Sequential(*layers, last)
    return net if like is None else net.to(dtype=like.dtype, device=like.device)


def make_encoder(
    encoder: EncoderArg,
    site: str,
    in_features: int,
    out_features: int,
    hidden: tuple[int, ...],
    like: torch.Tensor | None = None,
) -> nn.Module:
    """The encoder module of ``site`` from the guide's ``encoder`` argument
    (the default one in the dtype and on the device of ``like``)."""
    if encoder is None:
        return default_encoder(in_features, out_features, hidden, like)
    if isinstance(encoder, nn.Module):
        return encoder
    if isinstance(encoder, Mapping):
        if site not in encoder:
            raise ValueError(
                f"'encoder' has no module for amortized site {site!r} (it has "
                f"{sorted(encoder)}); add one that maps {in_features} input "
                f"features to {out_features} outputs (loc and scale per value)"
            )
        return encoder[site]
    if callable(encoder):
        return encoder(site, in_features, out_features)
    raise TypeError(
        "'encoder' must be None, an nn.Module, a mapping from site names to "
        f"modules, or a callable (site, in_features, out_features): {encoder!r}"
    )


class RowReader:
    """Reads the rows of an amortized plate from the model's arguments.

    Parameters
    ----------
    plate : str
        The plate's name (for messages).
    source : str, int or callable
        A model argument by name or position whose leading dimension indexes
        the plate, or ``source(*args, **kwargs)`` returning such a tensor.
    transform : callable or None
        Applied to the rows, such as ``torch.log1p`` for counts.
    model : callable
        The user's model, to find a named argument passed by position.
    """

    def __init__(
        self,
        plate: str,
        source: str | int | Callable,
        transform: Callable | None,
        model: Callable,
    ):
        if not (callable(source) or isinstance(source, (str, int))):
            raise TypeError(
                f"'encoder_input' of plate {plate!r} must be a model argument's "
                f"name or position, or a callable of the model's arguments: "
                f"{source!r}"
            )
        if transform is not None and not callable(transform):
            raise TypeError(f"'input_transform' must be callable: {transform!r}")
        self.plate, self.source, self.transform = plate, source, transform
        try:
            self._signature: inspect.Signature | None = inspect.signature(model)
        except (TypeError, ValueError):
            self._signature = None

    def whole(self, args: tuple, kwargs: Mapping[str, Any]) -> torch.Tensor:
        """The source tensor as the model got it."""
        source = self.source
        if callable(source):
            value = source(*args, **kwargs)
        elif isinstance(source, int):
            if source >= len(args):
                raise ValueError(
                    f"'encoder_input' of plate {self.plate!r} is positional "
                    f"argument {source}, but the model got {len(args)}; name the "
                    "argument instead, or pass it by position"
                )
            value = args[source]
        else:
            value = self._named(source, args, kwargs)
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            raise ValueError(
                f"'encoder_input' of plate {self.plate!r} must give a tensor whose "
                f"leading dimension indexes the plate, not {type(value).__name__}"
            )
        return value

    def _named(self, name: str, args: tuple, kwargs: Mapping[str, Any]) -> Any:
        if name in kwargs:
            return kwargs[name]
        if self._signature is not None:
            try:
                bound = self._signature.bind_partial(*args, **kwargs)
            except TypeError:
                bound = None
            if bound is not None and name in bound.arguments:
                return bound.arguments[name]
        raise ValueError(
            f"'encoder_input' of plate {self.plate!r} is the model argument "
            f"{name!r}, which this call did not pass (pass it, or give a callable "
            "of the model's arguments)"
        )

    def rows(
        self,
        args: tuple,
        kwargs: Mapping[str, Any],
        size: int,
        full_size: int,
        indices: torch.Tensor | None,
    ) -> torch.Tensor:
        """The inputs of the plate's current rows, ``(rows, features)``.

        A source with ``size`` rows is the current rows already (a
        mini-batch); one with ``full_size`` rows is indexed by the current
        subsample ``indices``.
        """
        value = self.whole(args, kwargs)
        lead = value.shape[0]
        if lead != size:
            if lead != full_size or indices is None:
                raise ValueError(
                    f"the encoder input of plate {self.plate!r} has {lead} rows, "
                    f"but the plate has {full_size} (this call: {size}); pass a "
                    "tensor whose leading dimension indexes the plate, either all "
                    "of it or the current subsample"
                )
            value = value.index_select(0, indices.to(value.device))
        if self.transform is not None:
            value = self.transform(value)
        return value.reshape(value.shape[0], -1)


class SiteEncoder(PyroModule):
    """A site's encoder and offsets: the rows' ``loc`` and ``scale``.

    ``loc = loc_offset + out[:, :k]`` and
    ``scale = softplus(out[:, k:] + softplus^-1(init_scale))`` per row, with
    ``k`` the site's values per row, so an encoder whose output is zero gives
    every row the initial location and ``init_scale``.

    Parameters
    ----------
    net : nn.Module
        Maps ``(rows, in_features)`` to ``(rows, 2 * k)``; its parameters are
        the guide's (Pyro names ``<guide>.encoders.<site>.net.*``).
    loc_offset : torch.Tensor
        The initial unconstrained location of one row, shape ``row_shape``.
    init_scale : float
    """

    def __init__(self, net: nn.Module, loc_offset: torch.Tensor, init_scale: float):
        super().__init__()
        if not isinstance(net, PyroModule):
            to_pyro_module_(net)
        self.net = net
        self.row_shape = tuple(loc_offset.shape)
        self.k = max(1, math.prod(self.row_shape))
        self.loc_offset = PyroParam(loc_offset.detach().clone())
        self.scale_shift = math.log(math.expm1(init_scale))

    def forward(
        self, rows: torch.Tensor, site: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``loc`` and ``scale`` of shape ``(rows, *row_shape)``."""
        offset = self.loc_offset
        out = self.net(rows.to(offset.dtype))
        if out.dim() != 2 or out.shape != (rows.shape[0], 2 * self.k):
            raise ValueError(
                f"the encoder of amortized site {site!r} returned shape "
                f"{tuple(out.shape)} for {rows.shape[0]} rows; it must return "
                f"({rows.shape[0]}, {2 * self.k}): a loc and a scale for each of "
                f"the site's {self.k} values per row"
            )
        shape = (rows.shape[0], *self.row_shape)
        loc = offset + out[:, : self.k].reshape(shape)
        raw = out[:, self.k :].reshape(shape) + self.scale_shift
        return loc, nn.functional.softplus(raw)
