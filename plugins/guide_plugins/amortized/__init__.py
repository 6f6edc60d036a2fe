"""The ``amortized`` family: local latents from encoders of their rows.

Every other guide keeps one set of parameters per element of every plate:
with a latent per cell, document or customer that is ``2 x N x d`` numbers,
each learned only when a mini-batch visits its row, and nothing to say about
a new row without refitting. :class:`AutoAmortizedNormal` (an AutoGuide) and
:class:`AutoAmortizedNormalMessenger` (an AutoMessenger) give the sites of
their amortized plates a Normal whose ``loc`` and ``scale`` an encoder
computes from each row's input (:mod:`.encoders`); the other sites stay
mean-field, as AutoNormal. :func:`~.rates.optim_args_by_name` gives the
encoders their own optimizer settings. This family is written as a third
party's plugin would be: it uses the core's public names and registers
itself through its entry point.
"""

from __future__ import annotations

from collections.abc import Callable

from guide_core import Capabilities, GuideSpec, hookimpl

from .guide import AutoAmortizedNormal
from .messenger import AutoAmortizedNormalMessenger
from .rates import optim_args_by_name

__all__ = [
    "AutoAmortizedNormal",
    "AutoAmortizedNormalMessenger",
    "optim_args_by_name",
    "register_guides",
]


@hookimpl
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register ``auto_amortized_normal`` and its messenger."""
    register(
        GuideSpec(
            name="auto_amortized_normal",
            factory=AutoAmortizedNormal,
            family="amortized",
            summary="Normal per site; local latents from an encoder of each row.",
            capabilities=Capabilities(subsample=True, mean_field=True),
        )
    )
    register(
        GuideSpec(
            name="auto_amortized_normal_messenger",
            factory=AutoAmortizedNormalMessenger,
            family="amortized",
            summary="AutoAmortizedNormal as an overridable messenger.",
            capabilities=Capabilities(subsample=True, mean_field=True),
        )
    )
