""":class:`AutoAmortizedNormal`: AutoNormal whose local latents come from encoders."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import pyro
import torch
from pyro import poutine
from pyro.nn.module import PyroModule

from guide_core import init_to_feasible
from guide_core.plugin import (
    GaussianStart,
    SiteFacts,
    get_nested,
    set_nested,
    validate_init_scale,
)
from guide_plugins.normal import AutoNormal

from .encoders import EncoderArg, RowReader, SiteEncoder, make_encoder
from .locals import find_rows, local_plates, observed_sites, plate_size

__all__ = ["AutoAmortizedNormal", "plate_names", "readers_for"]


def plate_names(amortized_plates: str | Sequence[str]) -> tuple[str, ...]:
    """The amortized plates as a tuple of names (one name may be a string)."""
    names = (
        (amortized_plates,)
        if isinstance(amortized_plates, str)
        else tuple(amortized_plates)
    )
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(
            "'amortized_plates' must name the plates of local latents, such as "
            f"'data' or ('cells',): {amortized_plates!r}"
        )
    return names


def readers_for(
    plates: tuple[str, ...],
    encoder_input: Any,
    input_transform: Callable | None,
    model: Callable,
) -> dict[str, RowReader]:
    """One :class:`RowReader` per plate (``encoder_input`` may map plates)."""
    if encoder_input is None:
        raise ValueError(
            "'encoder_input' must say what each row of an amortized plate reads: "
            "a model argument's name or position, or a callable"
        )
    if isinstance(encoder_input, Mapping):
        missing = [p for p in plates if p not in encoder_input]
        if missing:
            raise ValueError(
                f"'encoder_input' has no input for amortized plate {missing[0]!r}"
            )
        return {
            p: RowReader(p, encoder_input[p], input_transform, model) for p in plates
        }
    return {p: RowReader(p, encoder_input, input_transform, model) for p in plates}


@attrs.frozen
class Layout:
    """Where an amortized site's rows are: its plate and the plate's axis in
    the site's unconstrained value."""

    plate: str
    axis: int


class AutoAmortizedNormal(AutoNormal):
    """A Normal guide whose local latents come from an encoder of their rows.

    Every latent site inside an amortized plate (one per cell, document,
    customer) gets, for each row of the plate, a Normal in its unconstrained
    space whose ``loc`` and ``scale`` an encoder computes from that row's
    input (for example the row's observations): the guide's parameters no
    longer grow with the plate, every mini-batch trains every row, and rows
    it never saw get a posterior without refitting (``Predictive`` on new
    data). The other sites keep AutoNormal's mean-field ``locs.<site>`` and
    ``scales.<site>``.

    Parameters
    ----------
    model : callable
        A Pyro model.
    amortized_plates : str or sequence of str, optional
        The plates of local latents. Default: every plate holding both
        latent and observed sites.
    encoder_input : str, int, callable, or mapping from plate names to those
        What each row of a plate reads: a model argument (by name or
        position) whose leading dimension indexes the plate, all of it or the
        current subsample (a mini-batch); or ``fn(*args, **kwargs)`` giving
        such a tensor. Default: the model argument that the plate's observed
        site reads (found once, from the model's first call).
    input_transform : callable, optional
        Applied to the rows first, such as ``torch.log1p`` for counts.
    encoder : nn.Module, mapping, or callable, optional
        Each amortized site's encoder, mapping ``(rows, in_features)`` to
        ``(rows, 2 * k)`` (a loc and a scale for each of the site's ``k``
        values per row): a module (with one amortized site), a mapping from
        site names to modules, or a factory ``(site, in_features,
        out_features) -> module``. Default: an MLP with ``hidden`` widths
        whose last layer starts at zero.
    hidden : tuple of int
        The default MLP's hidden widths.
    init_loc_fn : callable
        Initial locations (the encoders' offsets start at the mean over rows).
    init_scale : float
        Initial scale of every unconstrained latent (> 0).
    create_plates : callable, optional
        As for :class:`~guide_core.AutoGuide`.

    Notes
    -----
    Parameters are ``<name>.locs.<site>``, ``<name>.scales.<site>``, and per
    amortized site ``<name>.encoders.<site>.loc_offset`` and
    ``<name>.encoders.<site>.net.*``: a ``pyro.optim`` callable can give the
    encoders their own learning rate (see :func:`~.rates.optim_args_by_name`).
    """

    def __init__(
        self,
        model: Callable,
        *,
        amortized_plates: str | Sequence[str] | None = None,
        encoder_input: Any = None,
        input_transform: Callable | None = None,
        encoder: EncoderArg = None,
        hidden: Sequence[int] = (64,),
        init_loc_fn: Callable = init_to_feasible,
        init_scale: float = 0.1,
        create_plates: Callable | None = None,
    ):
        self._asked = (
            None if amortized_plates is None else plate_names(amortized_plates)
        )
        self._amortized: tuple[str, ...] = self._asked or ()
        self._source, self._transform = encoder_input, input_transform
        self._user_model = model
        self._readers: dict[str, RowReader] = {}
        if self._asked is not None and encoder_input is not None:
            self._readers = readers_for(
                self._asked, encoder_input, input_transform, model
            )
        self._encoder_arg = encoder
        self._hidden = tuple(int(h) for h in hidden)
        validate_init_scale(init_scale)
        self._layouts: dict[str, Layout] | None = None
        self._encoded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        super().__init__(
            model,
            init_loc_fn=init_loc_fn,
            init_scale=init_scale,
            create_plates=create_plates,
        )

    @property
    def amortized_plates(self) -> tuple[str, ...]:
        """The amortized plates (found from the model's first call when not
        named): the guide's parameters do not depend on their sizes."""
        return self._amortized

    # -- set-up ------------------------------------------------------------------

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        self._layouts = None
        guess = self._asked is None or self._source is None
        self._observed = observed_sites(self.model, args, kwargs) if guess else []
        super()._setup_prototype(*args, **kwargs)  # the mean-field sites' params
        if self._source is None:
            self._readers = {
                p: RowReader(
                    p,
                    find_rows(self._prototype, self._observed, p, args, kwargs),
                    self._transform,
                    self._user_model,
                )
                for p in self._amortized
            }
        self.encoders = PyroModule()
        with poutine.block():  # the call's own plates come after the set-up
            plates = self._create_plates(*args, **kwargs)
        for name, layout in self._site_layouts().items():
            site = self._prototype.sites[name]
            self._event_dims[name] = site.unconstrained_event_dim
            rows = self._rows(layout.plate, plates[layout.plate], args, kwargs)
            init = site.init_unconstrained().detach()
            offset = init.mean(layout.axis) if init.shape[layout.axis] else init
            out = 2 * max(1, offset.numel())
            net = make_encoder(
                self._encoder_arg, name, rows.shape[1], out, self._hidden, offset
            )
            encoder = SiteEncoder(net, offset, self._init_scale).to(offset.device)
            set_nested(self.encoders, name, encoder)

    def _site_layouts(self) -> dict[str, Layout]:
        """Each amortized site's plate and axis, checked against the model."""
        if self._layouts is not None:
            return self._layouts
        known = set(self._prototype.plates)
        if self._asked is None:
            self._amortized = local_plates(self._prototype, self._observed)
        for plate in self._amortized:
            if plate not in known:
                raise ValueError(
                    f"amortized plate {plate!r} is not a plate of the model (its "
                    f"plates: {sorted(known) or 'none'}); name one of those"
                )
        layouts = {}
        for name, site in self._prototype.sites.items():
            mine = [p for p in site.plates if p.name in self._amortized]
            if not mine:
                continue
            if len(mine) > 1:
                raise ValueError(
                    f"site {name!r} is in two amortized plates "
                    f"({mine[0].name!r}, {mine[1].name!r}); amortize one of them"
                )
            value = site.require_unconstrained()
            axis = value.dim() - site.unconstrained_event_dim + mine[0].dim
            if axis < 0:
                raise ValueError(
                    f"site {name!r} has no dimension for plate {mine[0].name!r}"
                )
            layouts[name] = Layout(mine[0].name, axis)
        self._layouts = layouts
        return layouts

    def _mean_field_sites(self) -> dict[str, SiteFacts]:
        amortized = self._site_layouts()
        return {
            n: s for n, s in self._prototype.continuous().items() if n not in amortized
        }

    # -- plates and rows ---------------------------------------------------------

    def _create_plates(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        new = self._new_rows(args, kwargs)
        if not new:
            return super()._create_plates(*args, **kwargs)
        # new rows: the plate is as long as they are (made through the
        # create_plates hook, so that no plate of the old size is made too)
        self.create_plates = lambda *a, **k: [
            pyro.plate(name, rows, dim=self._prototype.plates[name].dim)
            for name, rows in new.items()
        ]
        try:
            return super()._create_plates(*args, **kwargs)
        finally:
            self.create_plates = None

    def _new_rows(self, args: tuple, kwargs: dict) -> dict[str, int]:
        """The amortized plates (not subsampled) whose input has other rows
        than the model's first call had, with their number of rows."""
        if self.create_plates is not None or self.master is not None:
            return {}
        new = {}
        for name in self._amortized:
            frame = self._prototype.plates.get(name)
            if frame is None or frame.subsampled or name not in self._readers:
                continue
            rows = self._readers[name].whole(args, kwargs).shape[0]
            if rows == frame.size:
                continue
            size = plate_size(self.model, args, kwargs, name)
            if size != rows:
                raise ValueError(
                    f"the encoder input of plate {name!r} has {rows} rows, but the "
                    f"plate has {size} in this call of the model; pass a tensor "
                    "whose leading dimension indexes the plate"
                )
            new[name] = rows
        return new

    def _rows(self, plate: str, made: Any, args: tuple, kwargs: dict) -> torch.Tensor:
        full = made.size
        size = made.subsample_size if made.subsample_size is not None else full
        indices = made.indices if size != full else None
        return self._readers[plate].rows(args, kwargs, size, full, indices)

    def _read_inputs(self, args: tuple, kwargs: dict) -> None:
        """Each amortized site's ``loc`` and ``scale`` for this call's rows."""
        rows: dict[str, torch.Tensor] = {}
        self._encoded = {}
        for name, layout in self._site_layouts().items():
            if layout.plate not in rows:
                made = self.plates[layout.plate]
                rows[layout.plate] = self._rows(layout.plate, made, args, kwargs)
            loc, scale = get_nested(self.encoders, name)(rows[layout.plate], name)
            self._encoded[name] = (
                loc.movedim(0, layout.axis),
                scale.movedim(0, layout.axis),
            )

    def _get_loc_and_scale(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name in self._encoded:
            return self._encoded[name]
        return super()._get_loc_and_scale(name)

    def _unconstrained_marginals(self, *args: Any, **kwargs: Any) -> dict:
        self._create_plates(*args, **kwargs)
        self._read_inputs(args, kwargs)
        return super()._unconstrained_marginals(*args, **kwargs)

    def _warm_start(self, start: GaussianStart) -> dict[str, torch.Tensor]:
        raise NotImplementedError(
            "AutoAmortizedNormal's local latents come from encoders, which a "
            "Gaussian over all latents does not set"
        )
