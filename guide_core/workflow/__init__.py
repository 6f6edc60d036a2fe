"""The workflow layer: what a user does with a guide once it exists.

``fit`` and its diagnostics (PSIS k-hat), posterior draws and summaries (ArviZ
export), ``save``/``load``, and ``compose`` (the ``"auto"`` guide, a plugin). It
may import the core and the registry, never the cli. Importing it gives every
guide its ``sample_posterior`` method.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.guide import AutoGuide
from ..core.messenger import AutoMessenger
from .posterior import sample_posterior


def _sample_posterior(
    self: Any, *args: Any, num_samples: int = 1000, **kwargs: Any
) -> dict[str, torch.Tensor]:
    """Draw ``num_samples`` times; see :func:`guide_core.sample_posterior`.

    Returns
    -------
    dict
        ``{site name: tensor}`` for every latent and deterministic site of
        the model, with the draws on dim 0.
    """
    return sample_posterior(self, *args, num_samples=num_samples, **kwargs)


# The convenience method lives with the function it calls, not in the core.
AutoGuide.sample_posterior = _sample_posterior
AutoMessenger.sample_posterior = _sample_posterior
