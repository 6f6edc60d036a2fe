"""The ``dais`` family: differentiable annealed importance sampling (DAIS).

:class:`AutoDAIS` anneals one Gaussian over the whole flat latent to the
posterior with ``K`` uncorrected Langevin steps; :class:`AutoSemiDAIS` keeps a
parametric guide for the global latents and runs one such trajectory per
element of a subsampled plate for the local latents, so it scales to data
subsampling. The trajectory itself lives once, in :mod:`.langevin`.
"""

from __future__ import annotations

from collections.abc import Callable

from guide_core import Capabilities, GuideSpec, hookimpl

from .auto import AutoDAIS
from .semi import AutoSemiDAIS

__all__ = ["AutoDAIS", "AutoSemiDAIS", "register_guides"]


@hookimpl
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register ``auto_dais`` and ``auto_semi_dais``."""
    register(
        GuideSpec(
            name="auto_dais",
            factory=AutoDAIS,
            family="dais",
            summary="A Gaussian over the flat latent refined by K differentiable "
            "annealed (uncorrected Langevin) importance sampling steps.",
            capabilities=Capabilities(jit=False),
        )
    )
    register(
        GuideSpec(
            name="auto_semi_dais",
            factory=AutoSemiDAIS,
            family="dais",
            summary="A global guide for the global latents and, per element of a "
            "subsampled plate, DAIS for the local latents given the globals.",
            capabilities=Capabilities(subsample=True, jit=False),
        )
    )
