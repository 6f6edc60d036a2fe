"""What a recording and a compile cost, and when the planned steps pay for them.

``"auto"`` records a step only when the planned steps pay for the recording:
the steps left, at the measured ms of an eager step, times the share that a
replay saves (:data:`RECORD_SAVING`), must exceed the recording's time. It
compiles the recorded program only when the steps left, at the recorded
ms/step, times the share a compile saves at best (:data:`COMPILE_SAVING`),
exceed the compile time. Each time is the one given in :class:`Costs`, else
the last one measured in this process, else a conservative estimate.
"""

from __future__ import annotations

import attrs

__all__ = [
    "COMPILE_SAVING",
    "COMPILE_SECONDS",
    "RECORD_SAVING",
    "RECORD_SECONDS",
    "Costs",
    "note_seconds",
]

#: Inductor's compile of a step on CPU, a conservative figure.
COMPILE_SECONDS = 60.0
COMPILE_SAVING = 0.5
#: A recording with its checks against eager: 0.3-0.9 s measured on the
#: bench's models (more with many sites), so 1 s until one is measured.
RECORD_SECONDS = 1.0
#: A replay takes 0.1-0.4 of Pyro's step on the bench's models.
RECORD_SAVING = 0.6

_ESTIMATES = {"record": RECORD_SECONDS, "compile": COMPILE_SECONDS}
_measured: dict[str, float] = {}


def note_seconds(what: str, seconds: float) -> None:
    """Remember a measured ``"record"`` or ``"compile"`` time for later choices."""
    _measured[what] = seconds


@attrs.frozen
class Costs:
    """The times ``"auto"`` weighs; None: the last measured, else the estimate.

    Parameters
    ----------
    record_seconds : float or None
        What recording one step (with its checks) costs.
    compile_seconds : float or None
        What compiling the recorded program costs.
    """

    record_seconds: float | None = None
    compile_seconds: float | None = None

    def _seconds(self, what: str) -> tuple[float, str]:
        given = getattr(self, f"{what}_seconds")
        if given is not None:
            return given, "given"
        if what in _measured:
            return _measured[what], "measured"
        return _ESTIMATES[what], "estimated"

    def record_pays_off(self, steps_left: int, eager_ms: float) -> tuple[bool, str]:
        """Whether recording the step is worth it, and the sums why."""
        return self._pays("record", steps_left, eager_ms, RECORD_SAVING, "eager")

    def compile_pays_off(self, steps_left: int, recorded_ms: float) -> tuple[bool, str]:
        """Whether compiling the recorded program is worth it, and the sums why."""
        return self._pays(
            "compile", steps_left, recorded_ms, COMPILE_SAVING, "recorded"
        )

    def _pays(
        self, what: str, steps_left: int, ms: float, saving: float, now: str
    ) -> tuple[bool, str]:
        cost_s, source = self._seconds(what)
        saving_s = steps_left * ms / 1000.0 * saving
        pays = saving_s > cost_s
        sums = (
            f"{saving_s:.2g} s to save {'>' if pays else '<='} {cost_s:.2g} s to "
            f"{what} ({source}; {steps_left} steps left at {ms:.3g} ms/step "
            f"{now}, at most {saving:.0%} saved)"
        )
        return pays, sums
