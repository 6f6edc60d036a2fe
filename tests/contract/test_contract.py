"""Every registered guide through the contract of :mod:`guide_core.testing`.

The guides are those of ``registry.names()`` (built-in families, the ``auto``
composition and the example third-party plugin ``auto_prior``); a guide with
back ends runs once per back end. A ``(guide, check)`` pair where the guide
breaks a promise of its spec is marked ``xfail(strict=True)`` in
:data:`BROKEN`, with the failure, so that a fix shows up as an XPASS.
"""

from __future__ import annotations

import functools

import pyro.distributions.transforms as T

from guide_core import registry
from guide_core.testing import GuideContract

# Guides that need a plate with local latents: the generic checks use the
# conjugate model (a latent z per row) instead of the global-site model.
LOCAL = ("auto_amortized_normal", "auto_amortized_normal_messenger")
LOCAL += ("auto_batched_low_rank_multivariate_normal",)
LOCAL += ("auto_batched_multivariate_normal", "auto_semi_dais")

# Fewer steps for the slow ones (AutoSemiDAIS runs DAIS per row: ~75 ms a step).
STEPS = {"auto_semi_dais": 150}


class TestEveryGuide(GuideContract):
    guide_names = registry.names()

    def guide_kwargs(self, guide_name, case):
        if guide_name == "auto_normalizing_flow":
            return {"init_transform_fn": functools.partial(T.block_autoregressive)}
        if guide_name.startswith("auto_amortized"):
            return {"amortized_plates": "data", "encoder_input": "y", "hidden": (8,)}
        if guide_name == "auto_semi_dais":
            return {"local_model": case.model, "K": 2}
        return {}

    def model_case(self, guide_name):
        if guide_name in LOCAL:
            return "conjugate"
        return super().model_case(guide_name)

    def steps_for(self, guide_name):
        return STEPS.get(guide_name, self.fit_steps)
