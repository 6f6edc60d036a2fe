"""A param statement's value together with the free tensor it was made from.

A constrained param is made afresh at every ``pyro.param`` statement: the
param store applies ``transform_to(constraint)`` to the unconstrained tensor
it holds. Some transforms cost more than a guide needs from them: a
Cholesky factor of D x D is built whole (a triangle copy, a diagonal embedded
into zeros, their sum) and its gradient is taken apart the same way, when the
guide only multiplies by the factor and reads its diagonal. A guide that knows
the transform can work from the unconstrained tensor instead, which costs a
few D x D passes less each step and gives the same values to rounding.

That is only right when the value really was just made from that tensor by
that transform: a handler such as ``poutine.substitute`` may supply another
value, and the store may hold the param under another constraint. This module
answers both questions for one param statement, without changing what any
handler sees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.poutine.messenger import Messenger
from torch.distributions import Transform, transform_to

from .latent import get_nested

__all__ = ["param_with_leaf"]


class _MadeHere(Messenger):
    """Notes the value a param statement's own function makes, if it runs.

    It wraps the message's ``fn`` for this one call and puts the original back
    as soon as the wrapper runs, so traces record the usual ``fn``. When a
    handler supplied the value, the wrapper never runs and the original is put
    back in this (innermost, so last) post-processing: a trace outside has by
    then copied the message with the wrapper as its ``fn`` (which calls the
    original, so re-running the site still gives the param).
    """

    def __init__(self) -> None:
        super().__init__()
        self.made: tuple[str, Any] | None = None
        self._restore: tuple[dict, Callable] | None = None

    def _pyro_param(self, msg: dict) -> None:
        fn = msg["fn"]

        def made_here(*args: Any, **kwargs: Any) -> Any:
            msg["fn"] = fn
            value = fn(*args, **kwargs)
            self.made = (msg["name"], value)
            return value

        msg["fn"] = made_here
        self._restore = (msg, fn)

    def _pyro_post_param(self, msg: dict) -> None:
        if self._restore is not None and self._restore[0] is msg:
            msg["fn"] = self._restore[1]
            self._restore = None


def param_with_leaf(
    module: torch.nn.Module, name: str
) -> tuple[torch.Tensor, torch.Tensor | None, Transform | None]:
    """Read the ``PyroParam`` at ``module.<name>``; return value, leaf, transform.

    Parameters
    ----------
    module : torch.nn.Module
        The ``PyroModule`` holding the param (``name`` may be dotted).
    name : str
        The param's path under ``module``.

    Returns
    -------
    (Tensor, Tensor or None, Transform or None)
        The value the param statement returned (registered as usual, so
        ``SVI`` optimizes it); the unconstrained tensor it was made from and
        the transform that made it; or ``None, None`` for both when the value was not
        made from the param's own tensor in this statement (a handler
        supplied it) and only the value may be used.
    """
    watch = _MadeHere()
    with watch:
        value = get_nested(module, name)
    made = watch.made
    if made is None or made[1] is not value:
        return value, None, None
    ref = getattr(value, "unconstrained", None)
    leaf = ref() if callable(ref) else None
    if not isinstance(leaf, torch.Tensor):
        return value, None, None
    store = pyro.get_param_store()
    if store._params.get(made[0]) is leaf:
        constraint = store._constraints[made[0]]
    else:  # a module-local param: the module's own constraint made it
        *path, attr = name.split(".")
        owner = get_nested(module, ".".join(path)) if path else module
        constraint = owner._pyro_params[attr][0]
    return value, leaf, transform_to(constraint)
