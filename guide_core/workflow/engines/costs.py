"""What a compile costs and when it pays for itself.

``"auto"`` compiles the recorded program when the planned steps pay for the
compile: the steps left, at the measured ms/step of the recorded program,
times the share a compile saves at best (:data:`COMPILE_SAVING`), must
exceed the compile time (the last one measured in this process, else
:data:`COMPILE_SECONDS`, a conservative figure for inductor on CPU).
"""

from __future__ import annotations

__all__ = [
    "COMPILE_SAVING",
    "COMPILE_SECONDS",
    "compile_pays_off",
    "note_compile_seconds",
]

COMPILE_SECONDS = 60.0
COMPILE_SAVING = 0.5
_measured: dict[str, float] = {}


def note_compile_seconds(seconds: float) -> None:
    """Remember a measured compile time for later ``"auto"`` choices."""
    _measured["compile"] = seconds


def compile_pays_off(steps_left: int, recorded_ms: float) -> tuple[bool, str]:
    """Whether compiling the recorded program is worth it, and the sums why."""
    compile_s = _measured.get("compile", COMPILE_SECONDS)
    source = "measured" if "compile" in _measured else "estimated"
    saving_s = steps_left * recorded_ms / 1000.0 * COMPILE_SAVING
    pays = saving_s > compile_s
    sums = (
        f"{saving_s:.2g} s to save {'>' if pays else '<='} {compile_s:.2g} s to "
        f"compile ({source}; {steps_left} steps left at {recorded_ms:.3g} ms/step "
        f"recorded, at most {COMPILE_SAVING:.0%} saved)"
    )
    return pays, sums
