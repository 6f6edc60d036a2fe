"""One capture layer: a function of tensors as a replayable aten program.

It serves every recorded program of guide_core: the SVI step
(``guide_core.workflow.engines.program``), the recorded posterior draws
(``guide_core.core.capture.recorded_draws``) and the funsor AutoGaussian's
replay of funsor's Gaussian elimination (a plugin: hence in the core).

- :mod:`.recorder`: :func:`capture` (``make_fx``; a value read is refused
  with the user's line), :func:`shorten`, :func:`check` (the seeded check
  against the function), :func:`record` (all three), :class:`ProgramCache`;
- :mod:`.inputs`: :func:`signature` and :func:`split_args`, what a
  program assumed about its inputs and how to feed it;
- :mod:`.passes`: shorter programs, bit for bit;
- :mod:`.bindings`: calls through torch's bindings, not the op registry.
"""

from __future__ import annotations

from .bindings import use_bindings
from .inputs import signature, split_args
from .passes import impure, simplify
from .recorder import (
    SEED,
    NotCapturable,
    ProgramCache,
    capture,
    capturing,
    check,
    perturbed,
    record,
    shorten,
)

__all__ = [
    "SEED",
    "NotCapturable",
    "ProgramCache",
    "capture",
    "capturing",
    "check",
    "impure",
    "perturbed",
    "record",
    "shorten",
    "signature",
    "simplify",
    "split_args",
    "use_bindings",
]
