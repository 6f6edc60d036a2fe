"""The guide contract, for running on any family of guides (ours or yours).

Every registered guide promises, through its :class:`~guide_core.Capabilities`,
what it can handle. :class:`GuideContract` holds a guide to those promises:
subclass it in a test file and name the guides::

    from guide_core.testing import GuideContract

    class TestMyFamily(GuideContract):
        guide_names = ["auto_mine"]

pytest then runs each check of the contract on each guide (a guide with
back ends once per back end). A check of a capability the guide does not
claim either holds it to a clear refusal (a model with a discrete site given
to a guide without ``discrete``) or skips with a reason naming the guide and
the capability. The models the checks use are in
:mod:`guide_core.testing.models`. Nothing in ``guide_core`` imports this
package, and ``import guide_core`` does not import pytest.
"""

from __future__ import annotations

from .contract import GuideContract, targets
from .harness import CLEAR_ERRORS, Subject, assert_clear_error, latent_sites
from .models import CASES, ModelCase

__all__ = ["CASES", "CLEAR_ERRORS", "GuideContract", "ModelCase", "Subject"]
__all__ += ["assert_clear_error", "latent_sites", "targets"]
