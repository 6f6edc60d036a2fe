""":class:`AutoAmortizedNormalMessenger`: AutoNormalMessenger with encoders for
the sites of its amortized plates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from pyro.nn.module import PyroModule
from pyro.poutine.runtime import get_plates
from torch.distributions import Distribution

from guide_core.plugin import get_nested, set_nested
from guide_plugins.messengers._params import DEFAULT_INIT
from guide_plugins.messengers.normal import AutoNormalMessenger, _normal_posterior

from .encoders import EncoderArg, SiteEncoder, make_encoder
from .guide import plate_names, readers_for

__all__ = ["AutoAmortizedNormalMessenger"]


class AutoAmortizedNormalMessenger(AutoNormalMessenger):
    """A messenger guide whose local latents come from an encoder of their rows.

    At a site inside an amortized plate the posterior is, for each row, a
    Normal in the site's unconstrained space whose ``loc`` and ``scale`` the
    site's encoder computes from the row's input; at the other sites it is
    :class:`~guide_plugins.messengers.AutoNormalMessenger`'s. As with every
    messenger guide, a subclass overrides ``get_posterior`` for some sites
    and calls ``super().get_posterior`` for the rest. Encoders are created on
    a site's first visit (param names ``encoders.<site>.net.*`` and
    ``encoders.<site>.loc_offset``).

    Parameters
    ----------
    model : callable
        A Pyro model.
    amortized_plates, encoder_input, input_transform, encoder, hidden :
        As for :class:`~guide_plugins.amortized.AutoAmortizedNormal`.
    init_loc_fn : callable
        Initial locations (the offsets start at the mean over rows).
    init_scale : float
        Initial scale of every unconstrained latent (> 0).

    Notes
    -----
    The amortized plate must be the outermost plate of the model at each of
    its sites (plates inside it are part of each row).
    """

    # encoders loaded before their site's first visit wait there (see
    # SiteParamMessenger) and are applied when the encoder is created
    _param_groups = (*AutoNormalMessenger._param_groups, "encoders")

    def __init__(
        self,
        model: Callable,
        *,
        amortized_plates: str | Sequence[str],
        encoder_input: Any,
        input_transform: Callable | None = None,
        encoder: EncoderArg = None,
        hidden: Sequence[int] = (64,),
        init_loc_fn: Callable = DEFAULT_INIT,
        init_scale: float = 0.1,
    ):
        names = plate_names(amortized_plates)
        super().__init__(
            model,
            init_loc_fn=init_loc_fn,
            init_scale=init_scale,
            amortized_plates=names,
        )
        self._readers = readers_for(names, encoder_input, input_transform, model)
        self._encoder_arg = encoder
        self._hidden = tuple(int(h) for h in hidden)
        self.encoders = PyroModule()
        self._inputs: tuple[tuple, dict] = ((), {})
        self._rows: dict[str, torch.Tensor] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        self._inputs, self._rows = (args, kwargs), {}
        try:
            return super().__call__(*args, **kwargs)
        finally:
            self._inputs, self._rows = ((), {}), {}

    def get_posterior(
        self, name: str, prior: Distribution
    ) -> Distribution | torch.Tensor:
        """The encoder's Normal at a site of an amortized plate, else
        AutoNormalMessenger's posterior."""
        frames = [f for f in get_plates() if f.name not in self._outer_plates]
        mine = [f for f in frames if f.name in self.amortized_plates]
        if not mine:
            return super().get_posterior(name, prior)
        frame = mine[0]
        if prior.support.is_discrete:
            raise ValueError(
                f"site {name!r} in amortized plate {frame.name!r} has a discrete "
                "support; enumerate it in the model or hide it from this guide"
            )
        if min(f.dim for f in frames) != frame.dim:
            raise ValueError(
                f"amortized plate {frame.name!r} must be the outermost plate of "
                f"site {name!r} (plates inside it are part of each row)"
            )
        transform = self._transform(name, prior)
        batch = prior.batch_shape
        axis = len(batch) + frame.dim
        if axis < 0:
            raise ValueError(f"site {name!r} has no dimension for plate {frame.name!r}")
        row_shape = batch[axis + 1 :] + transform.inverse_shape(prior.event_shape)
        rows = self._plate_rows(frame)
        loc, scale = self._encoder(name, prior, transform, row_shape, rows)(rows, name)
        return _normal_posterior(loc, scale, transform)

    def _plate_rows(self, frame: Any) -> torch.Tensor:
        if frame.name not in self._rows:
            args, kwargs = self._inputs
            full = frame.full_size or frame.size
            node = self.trace.nodes.get(frame.name)
            indices = node["value"] if node is not None else None
            self._rows[frame.name] = self._readers[frame.name].rows(
                args, kwargs, frame.size, full, indices
            )
        return self._rows[frame.name]

    def _encoder(
        self,
        name: str,
        prior: Distribution,
        transform: Any,
        row_shape: torch.Size,
        rows: torch.Tensor,
    ) -> SiteEncoder:
        try:
            return get_nested(self.encoders, name)
        except AttributeError:
            pass
        init = self._init_unconstrained(name, prior, transform)
        k = max(1, row_shape.numel())
        if init.numel() == k:
            offset = init.reshape(row_shape)
        else:  # average the rows the init gave
            offset = init.reshape(-1, *row_shape).mean(0)
        net = make_encoder(
            self._encoder_arg, name, rows.shape[1], 2 * k, self._hidden, offset
        )
        encoder = SiteEncoder(net, offset, self._init_scale).to(rows.device)
        prefix = f"encoders.{name}."
        loaded = {
            key[len(prefix) :]: self._pending_params.pop(key)
            for key in [k for k in self._pending_params if k.startswith(prefix)]
        }
        if loaded:
            encoder.load_state_dict(loaded)
        set_nested(self.encoders, name, encoder)
        return encoder
