"""Per-module optimizer settings by parameter name, for ``pyro.optim``.

``pyro.optim`` optimizers take a callable instead of a dict of settings: it
gets each parameter's name (``AutoAmortizedNormal.encoders.z.net.0.weight``)
and returns that parameter's settings. :func:`optim_args_by_name` builds one
from name fragments, so the encoders can learn at their own rate::

    optim = pyro.optim.ClippedAdam(
        optim_args_by_name({"encoders.": {"lr": 1e-3}}, {"lr": 1e-2})
    )
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["optim_args_by_name"]


def optim_args_by_name(
    rules: Mapping[str, Mapping[str, Any]], default: Mapping[str, Any]
) -> Callable[[str], dict[str, Any]]:
    """A ``pyro.optim`` settings callable: the first rule whose fragment is in
    the parameter's name gives its settings (over ``default``).

    Parameters
    ----------
    rules : mapping from str to dict
        Name fragment (``"encoders."``, ``"encoders.z."``) to settings.
    default : dict
        Settings of every parameter, and what a rule does not set.
    """
    if not isinstance(default, Mapping):
        raise TypeError(f"'default' must be a dict of settings: {default!r}")
    for fragment, settings in rules.items():
        if not isinstance(fragment, str) or not isinstance(settings, Mapping):
            raise TypeError(
                "'rules' must map name fragments to dicts of settings, such as "
                f"{{'encoders.': {{'lr': 1e-3}}}}: {fragment!r}: {settings!r}"
            )
    ordered = [(f, {**default, **s}) for f, s in rules.items()]

    def settings(param_name: str) -> dict[str, Any]:
        for fragment, chosen in ordered:
            if fragment in param_name:
                return dict(chosen)
        return dict(default)

    return settings
