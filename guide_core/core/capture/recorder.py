"""Capture a function of tensors as an aten program, shorten it, check it.

:func:`capture` runs ``fn(*inputs)`` once under
:func:`torch.fx.experimental.proxy_tensor.make_fx`: what it records is the
list of aten calls the call made (random draws included, as calls such as
``aten.normal_``), so a replay of the program draws afresh and, from the
same random state, draws what ``fn`` draws. A function that reads a
tensor's value into Python (``bool(x.sum() > 0)``, ``.item()``) cannot be
a fixed program: the capture is refused with the read and the user's line.
:func:`shorten` drops what need not run on every call
(:mod:`.passes`) and calls torch's bindings (:mod:`.bindings`);
:func:`check` compares a program with its function from one seed, and
:func:`record` does all three. Random state: everything here runs on a
fork of it, so the caller's stream is left as it was.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyro
import torch
import torch.fx as fx
from torch.fx.experimental.proxy_tensor import make_fx
from torch.overrides import TorchFunctionMode

from ..seeded import first_mismatch, run_seeded
from .bindings import use_bindings
from .passes import simplify

__all__ = [
    "SEED",
    "NotCapturable",
    "ProgramCache",
    "capture",
    "capturing",
    "check",
    "perturbed",
    "record",
    "shorten",
]

#: The seed :func:`record` checks a program from.
SEED = 0x5EED

_OWN = tuple(
    os.path.dirname(m.__file__)
    for m in (torch, pyro)
    if getattr(m, "__file__", None) is not None
) + (os.path.dirname(os.path.dirname(os.path.dirname(__file__))),)

# Calls that read a tensor's values into Python, where they can steer control
# flow (shapes, dtypes and devices are fixed for one program, values are not).
_VALUE_READS = frozenset(
    "__bool__ __int__ __float__ __index__ __complex__ item tolist numpy "
    "__array__ equal allclose is_nonzero".split()
)
_depth = contextvars.ContextVar("guide_core_capture_depth", default=0)


class NotCapturable(RuntimeError):
    """A function cannot be replayed as a fixed tensor program; the message
    says why (and where, for a failure during the capture)."""


def capturing() -> bool:
    """Whether a :func:`capture` is running (a function that records its own
    programs then runs as it is, and the outer capture records its calls)."""
    return _depth.get() > 0


class _ValueReads(TorchFunctionMode):
    """Notes the last call that read a tensor's value, to name it."""

    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _VALUE_READS:
            self.last = name
        return func(*args, **(kwargs or {}))


def _user_line(exc: BaseException) -> str:
    """The innermost frame of the traceback outside torch, pyro and guide_core."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if not frame.filename.startswith(_OWN):
            return f"{frame.filename}:{frame.lineno} ({frame.name}: {frame.line})"
    last = frames[-1] if frames else None
    return f"{last.filename}:{last.lineno}" if last else "an unknown line"


@contextlib.contextmanager
def _capturing() -> Iterator[None]:
    token = _depth.set(_depth.get() + 1)
    try:
        yield
    finally:
        _depth.reset(token)


def capture(
    fn: Callable[..., Any],
    inputs: Sequence[torch.Tensor],
    *,
    differentiable: bool = False,
    passthrough: tuple[type[BaseException], ...] = (),
) -> fx.GraphModule:
    """Record the aten calls of ``fn(*inputs)`` as a program of ``inputs``.

    ``fn`` runs once, for real (it draws from the caller's random state).

    Parameters
    ----------
    fn : callable
        A function of tensors; it returns tensors (in any pytree).
    inputs : sequence of torch.Tensor
        The program's inputs; every other tensor ``fn`` reads becomes a
        constant of the program.
    differentiable : bool
        The program's outputs will be differentiated by autograd: a tensor
        that needs a gradient but is no input (a stale recording: its
        gradient would be lost) refuses the capture.
    passthrough : tuple of exception types
        Raised by ``fn``, these propagate as they are.

    Returns
    -------
    torch.fx.GraphModule
        Called with tensors laid out as ``inputs``, it returns what ``fn``
        returns.

    Raises
    ------
    NotCapturable
        ``fn`` reads a tensor's value into Python, fails under the capture,
        or (``differentiable``) uses a tensor that needs a gradient but is
        no input.
    """
    reads = _ValueReads()
    try:
        with _capturing(), reads:
            graph = make_fx(fn)(*inputs)
    except passthrough:
        raise
    except Exception as exc:  # noqa: BLE001 - any capture failure is said so
        what = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "value out of a tracing tensor" in what or "data-dependent" in what:
            what = "it reads a tensor's value into Python"
            if reads.last is not None:
                what += f" ({reads.last})"
        raise NotCapturable(f"{what} at {_user_line(exc)}") from exc
    if differentiable:
        for node in graph.graph.nodes:
            value = getattr(graph, node.target) if node.op == "get_attr" else None
            if isinstance(value, torch.Tensor) and value.requires_grad:
                raise NotCapturable(
                    "it uses a tensor that needs a gradient but is no input"
                )
    return graph


def _devices(tensors: Sequence[torch.Tensor]) -> list[int]:
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


def shorten(
    graph: fx.GraphModule, inputs: Sequence[torch.Tensor], *, merge: bool = True
) -> fx.GraphModule:
    """A shorter copy of ``graph`` that computes the same, bit for bit.

    :func:`~.passes.simplify` (``merge``: repeated calls computed once),
    then :func:`~.bindings.use_bindings`, which runs the program once on
    ``inputs`` (on a fork of the random state). On any failure, ``graph``
    itself: it is still right.
    """
    try:
        short = simplify(copy.deepcopy(graph), merge=merge)
        with torch.random.fork_rng(devices=_devices(inputs)), torch.no_grad():
            short, _ = use_bindings(short, inputs)
    except Exception:  # noqa: BLE001 - the captured program is still right
        return graph
    return short


def _flat(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flat(o)]
    return []


def check(
    program: Callable[..., Any],
    fn: Callable[..., Any],
    inputs: Sequence[torch.Tensor],
    *,
    seed: int = SEED,
    names: Sequence[str] | None = None,
) -> str | None:
    """Where ``program(*inputs)`` and ``fn(*inputs)`` differ from one seed.

    Both run without gradients from ``seed`` (see
    :func:`~guide_core.core.seeded.run_seeded`); the caller's random state
    is left as it was.

    Returns
    -------
    str or None
        :func:`~guide_core.core.seeded.first_mismatch`'s message, or None
        when they agree.
    """
    with torch.no_grad():
        want = _flat(run_seeded(lambda: fn(*inputs), seed, inputs))
        got = _flat(run_seeded(lambda: program(*inputs), seed, inputs))
    if len(want) != len(got):
        return f"{len(got)} outputs instead of {len(want)}"
    names = list(names) if names is not None else []
    names += [f"output {i}" for i in range(len(names), len(want))]
    return first_mismatch(want, got, names)


def perturbed(inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Detached copies of ``inputs``, floating ones scaled by 1.05 to 1.15.

    A check on them catches a function that kept something computed from
    the values it was captured on (a cache outside its inputs).
    """
    gen = torch.Generator().manual_seed(0)
    out = []
    for t in inputs:
        if t.is_floating_point():
            u = torch.rand(t.shape, generator=gen, dtype=t.dtype).to(t.device)
            t = t.detach() * (1.05 + 0.1 * u)
        out.append(t.detach())
    return out


def record(
    fn: Callable[..., Any],
    inputs: Sequence[torch.Tensor],
    *,
    check_inputs: Sequence[torch.Tensor] | None = None,
    differentiable: bool = False,
    seed: int = SEED,
    names: Sequence[str] | None = None,
) -> fx.GraphModule:
    """Capture ``fn(*inputs)``, shorten it and check it against ``fn``.

    Everything runs on a fork of the random state: the caller's stream is
    left as it was, and the first real call is the caller's.

    Parameters
    ----------
    fn : callable
        A function of tensors returning tensors (see :func:`capture`).
    inputs : sequence of torch.Tensor
        The inputs to capture on.
    check_inputs : sequence of torch.Tensor, optional
        The inputs to check on (default ``inputs``; :func:`perturbed`
        copies catch state kept from the captured values).
    differentiable : bool
        The program will be differentiated: see :func:`capture`; repeated
        calls are also kept apart, so that their gradients are summed as
        ``fn``'s are (bit for bit).
    seed : int
        The seed of the capture and of the check.
    names : sequence of str, optional
        What each output is, for the check's message.

    Returns
    -------
    torch.fx.GraphModule
        The program: ``program(*inputs)`` returns what ``fn(*inputs)`` does.

    Raises
    ------
    NotCapturable
        The capture is refused (see :func:`capture`), or the program
        disagrees with ``fn`` (the message says where).
    """
    inputs = list(inputs)
    graph = run_seeded(
        lambda: capture(fn, inputs, differentiable=differentiable), seed, inputs
    )
    program = shorten(graph, inputs, merge=not differentiable)
    trial = inputs if check_inputs is None else list(check_inputs)
    try:
        mismatch = check(program, fn, trial, seed=seed, names=names)
    except Exception as exc:  # noqa: BLE001 - any failure: no replay
        raise NotCapturable(f"cannot check the program: {exc}") from exc
    if mismatch is not None:
        raise NotCapturable(f"the program disagrees with the function: {mismatch}")
    return program


class ProgramCache(dict):
    """Programs by input signature (``None``: known not to be capturable).

    Holds at most ``MAX_SIZE`` signatures, dropping the oldest. Programs are
    not pickled or deep-copied with it: a copy starts empty (and records
    again on its first call).
    """

    MAX_SIZE = 16

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self and len(self) >= self.MAX_SIZE:
            del self[next(iter(self))]
        super().__setitem__(key, value)

    def __reduce__(self) -> tuple:
        return (ProgramCache, ())
