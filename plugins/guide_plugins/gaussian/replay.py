"""Record the torch operations a function makes once, then replay them.

funsor plans a Gaussian elimination symbolically: hundreds of thousands of
Python dispatch calls per evaluation, for fewer than a thousand torch
operations whose sequence depends only on the shapes involved.
:class:`TensorProgram` records that sequence on one call (through a
:class:`~torch.overrides.TorchFunctionMode`) and compiles it into one
straight-line Python function, so later calls with inputs of the same shapes
run only the torch operations: the same operations in the same order, hence
the same values, gradients and random draws as the original function.

A recording is refused (:class:`NotReplayable`) when the function reads a
tensor's *value* into Python (``item``, ``bool``, ...), since its control flow
could then depend on it, or captures a tensor that needs a gradient but is not
one of its inputs. :func:`record` also checks the program against the function
on perturbed inputs before handing it out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch
from torch.overrides import TorchFunctionMode

__all__ = ["NotReplayable", "ProgramCache", "TensorProgram", "record"]

# Calls that draw random numbers: kept even when their result is unused, so a
# replay consumes the random stream exactly as the recorded call did.
_RANDOM = frozenset(
    "rand randn randint randperm rand_like randn_like randint_like normal "
    "bernoulli multinomial poisson binomial _standard_gamma _sample_dirichlet "
    "dropout alpha_dropout feature_dropout rrelu".split()
)
# Calls that read a tensor's values into Python, where they can steer control
# flow (shapes, dtypes and devices are fixed for one program, values are not).
_VALUE_READS = frozenset(
    "__bool__ __int__ __float__ __index__ __complex__ item tolist numpy "
    "__array__ equal allclose is_nonzero".split()
)


class NotReplayable(RuntimeError):
    """The recorded function cannot be replayed as a fixed tensor program."""


def _name(func: Any) -> str:
    return getattr(func, "__name__", "") or str(func)


def _contains_tensor(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, (list, tuple)):
        return any(_contains_tensor(x) for x in obj)
    if isinstance(obj, dict):
        return any(_contains_tensor(x) for x in obj.values())
    return False


@attrs.define
class _Entry:
    """One recorded call: its source lines, the names it binds and reads."""

    lines: list[str]
    binds: set[str]
    reads: set[str]
    pure: bool  # no mutation, no random draw: droppable when unused


class _Recorder(TorchFunctionMode):
    """Turns every torch call made under it into Python source."""

    def __init__(self, inputs: Sequence[torch.Tensor]):
        super().__init__()
        self.names: dict[int, str] = {}
        self.alive: list[torch.Tensor] = list(inputs)  # ids stay unique
        self.consts: list[Any] = []
        self.entries: list[_Entry] = []
        self.refusal: str | None = None
        self._reads: set[str] = set()
        for i, t in enumerate(inputs):
            self.names.setdefault(id(t), f"x{i}")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = _name(func)
        if name in _VALUE_READS and self.refusal is None:
            self.refusal = f"it reads tensor values into Python ({name})"
        mutates = (name.endswith("_") and not name.endswith("__")) or name in (
            "__setitem__",
            "__iadd__",
            "__isub__",
            "__imul__",
            "__itruediv__",
        )
        if not (_contains_tensor(out) or mutates):
            return out  # metadata (shapes, dtypes): fixed for one program
        self._reads = set()
        call = f"{self._const(func)}({self._render_args(args, kwargs)})"
        entry = _Entry([], set(), self._reads, not mutates and name not in _RANDOM)
        if isinstance(out, torch.Tensor):
            entry.lines.append(f"{self._bind(out, entry)} = {call}")
        elif _contains_tensor(out):
            entry.lines.append(f"_r = {call}")
            self._unpack(out, "_r", entry)
        else:
            entry.lines.append(call)
        self.entries.append(entry)
        return out

    def _unpack(self, out: Any, path: str, entry: _Entry) -> None:
        if isinstance(out, torch.Tensor):
            entry.lines.append(f"{self._bind(out, entry)} = {path}")
        elif isinstance(out, (list, tuple)):
            for i, x in enumerate(out):
                if _contains_tensor(x):
                    self._unpack(x, f"{path}[{i}]", entry)

    def _bind(self, t: torch.Tensor, entry: _Entry) -> str:
        name = self.names.get(id(t))
        if name is None:
            self.alive.append(t)
            name = self.names[id(t)] = f"t{len(self.names)}"
        entry.binds.add(name)
        return name

    def _const(self, value: Any) -> str:
        self.consts.append(value)
        return f"k[{len(self.consts) - 1}]"

    def _render(self, obj: Any) -> str:
        if isinstance(obj, torch.Tensor):
            known = self.names.get(id(obj))
            if known is not None:
                self._reads.add(known)
                return known
            if obj.requires_grad and self.refusal is None:
                self.refusal = "it uses a tensor that needs a gradient but is no input"
            return self._const(obj)
        if obj is None or isinstance(obj, (bool, int, str)):
            return repr(obj)
        if isinstance(obj, float) and math.isfinite(obj):
            return repr(obj)
        if type(obj) is tuple:
            return "(" + "".join(self._render(x) + ", " for x in obj) + ")"
        if type(obj) is list:
            return "[" + ", ".join(self._render(x) for x in obj) + "]"
        if type(obj) is dict:
            items = (f"{self._render(k)}: {self._render(v)}" for k, v in obj.items())
            return "{" + ", ".join(items) + "}"
        return self._const(obj)

    def _render_args(self, args: tuple, kwargs: dict) -> str:
        parts = [self._render(a) for a in args]
        parts += [f"{k}={self._render(v)}" for k, v in kwargs.items()]
        return ", ".join(parts)

    def compile(self, n_inputs: int, outputs: Sequence[torch.Tensor]) -> TensorProgram:
        """Return the program of ``n_inputs`` inputs computing ``outputs``.

        Calls whose results nothing needs are dropped, unless they draw random
        numbers or mutate a tensor.
        """
        self._reads = set()
        returned = "".join(self._render(t) + ", " for t in outputs)
        live = set(self._reads)
        kept: list[_Entry] = []
        for entry in reversed(self.entries):
            if not entry.pure or entry.binds & live:
                live |= entry.reads
                kept.append(entry)
        lines = [f"    {line}" for entry in reversed(kept) for line in entry.lines]
        params = ", ".join(f"x{i}" for i in range(n_inputs))
        source = "\n".join(
            [f"def program({params}):", *lines, f"    return ({returned})"]
        )
        return TensorProgram(source, self.consts, len(lines))


class TensorProgram:
    """A straight-line torch program recorded from one call of a function.

    Calling it with tensors shaped like the recorded inputs runs the same
    torch operations on them and returns the outputs in the recorded order.
    """

    def __init__(self, source: str, consts: list[Any], n_ops: int):
        self.source = source
        self.n_ops = n_ops
        scope: dict[str, Any] = {"k": consts}
        exec(compile(source, "<tensor program>", "exec"), scope)  # noqa: S102
        self._fn = scope["program"]

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._fn(*inputs)


class ProgramCache(dict):
    """Programs by input signature (``None``: not replayable), kept on a guide.

    Holds at most ``MAX_SIZE`` signatures, dropping the oldest. Compiled
    programs do not pickle or deep-copy; a copy starts empty and records
    again on its first call.
    """

    MAX_SIZE = 16

    def __setitem__(self, key: Any, value: TensorProgram | None) -> None:
        if key not in self and len(self) >= self.MAX_SIZE:
            del self[next(iter(self))]
        super().__setitem__(key, value)

    def __reduce__(self) -> tuple:
        return (ProgramCache, ())


def _perturbed(inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for t in inputs:
        if t.is_floating_point():
            u = torch.rand(t.shape, generator=gen, dtype=t.dtype).to(t.device)
            t = t.detach() * (1.05 + 0.1 * u)
        out.append(t.detach())
    return out


def _same(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and torch.allclose(x, y, 1e-5, 1e-6, equal_nan=True)
        for x, y in zip(a, b)
    )


def record(
    fn: Callable[..., Sequence[torch.Tensor]], inputs: Sequence[torch.Tensor]
) -> tuple[TensorProgram, tuple[torch.Tensor, ...]]:
    """Call ``fn(*inputs)`` while recording it; return the program and outputs.

    ``fn`` must return a sequence of tensors. Before returning, the program is
    checked against ``fn`` on perturbed copies of the inputs (same random
    state for both, which is restored afterwards).

    Raises
    ------
    NotReplayable
        ``fn`` reads tensor values into Python, captures a tensor that needs a
        gradient, or the program disagrees with ``fn`` on perturbed inputs.
        The outputs of the recorded call are on the exception
        (``exc.outputs``), so a caller can fall back without calling again.
    """
    rec = _Recorder(inputs)
    with rec:
        outputs = tuple(fn(*inputs))
    try:
        if rec.refusal is not None:
            raise NotReplayable(f"cannot replay {fn!r}: {rec.refusal}")
        program = rec.compile(len(inputs), outputs)
        trial = _perturbed(inputs)
        devices = sorted({t.device.index for t in inputs if t.is_cuda})
        try:
            with torch.no_grad():
                with torch.random.fork_rng(devices=devices):
                    expected = tuple(fn(*trial))
                with torch.random.fork_rng(devices=devices):
                    got = program(*trial)
        except Exception as exc:  # noqa: BLE001 - any failure: no replay
            raise NotReplayable(f"cannot check a replay of {fn!r}: {exc}") from exc
        if not _same(expected, got):
            raise NotReplayable(f"cannot replay {fn!r}: its replay disagrees with it")
    except NotReplayable as exc:
        exc.outputs = outputs
        raise
    return program, outputs
