"""Capture one SVI step as a tensor program, and replay it.

The step is the function ``(params..., tensor args...) -> (loss, grads...)``:
the guide's draws, the model's log density, the ELBO and its gradients. It is
captured once by :func:`torch.fx.experimental.proxy_tensor.make_fx`, at the
level of aten operations, backward pass included; the random draws are
operations of the program (``aten.normal_``, ``aten.randperm``, ...), so
every replay draws afresh. The parameters are the param store's own tensors,
passed in (never copied), so they stay in Pyro's param store under Pyro's
names. A program holds for one :func:`signature` of its inputs.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyro
import torch
from pyro import poutine
from torch.fx.experimental.proxy_tensor import make_fx

from .eager import all_sums_finite, param_leaves
from .fastcall import use_bindings
from .for_inductor import blas_products
from .losses import LossFn, NotRecordable
from .private_torch import compile_graph
from .repeats import ReuseRepeats
from .simplify import simplify

__all__ = ["StepProgram", "record", "signature", "split_args"]

_OWN = tuple(
    os.path.dirname(m.__file__)
    for m in (torch, pyro)
    if getattr(m, "__file__", None) is not None
) + (os.path.dirname(os.path.dirname(os.path.dirname(__file__))),)


def _layout(t: torch.Tensor) -> tuple:
    return (tuple(t.shape), t.stride(), t.dtype, t.device)


def _lifted(value: Any) -> bool:
    """Whether a top-level argument is a Python float made an input."""
    return type(value) is float


def _describe(value: Any, top: bool = True, lift: bool = False) -> Any:
    if top and lift and _lifted(value):
        return ("float",)
    if isinstance(value, torch.Tensor):
        # a top-level tensor is an input of the program; one nested in a
        # container is captured as a constant: known by identity and version
        if top:
            return ("tensor", *_layout(value))
        return ("constant", id(value), value._version)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_describe(v, False) for v in value))
    if isinstance(value, dict):
        items = sorted(value.items())
        return ("dict", tuple((k, _describe(v, False)) for k, v in items))
    try:
        hash(value)
    except TypeError:
        return ("object", id(value))
    return ("value", type(value).__name__, value)


def signature(
    params: Sequence[tuple[str, torch.Tensor]],
    args: tuple,
    kwargs: dict,
    lift: bool = False,
):
    """What a program assumed: shapes, strides, dtypes and devices of the inputs.

    Parameters
    ----------
    params : sequence of (str, torch.Tensor)
        The param store's names and unconstrained tensors the step uses.
    args, kwargs :
        The model's arguments: top-level tensors (the program's inputs) by
        shape, strides, dtype and device; tensors inside containers (captured
        as constants) by identity; other values by value (by identity if
        they are not hashable).
    lift : bool
        Top-level Python floats are inputs too (any value, one program).

    Returns
    -------
    tuple
        Hashable; a program is replayed only on an equal signature.
    """
    return (
        tuple((n, id(p), *_layout(p)) for n, p in params),
        tuple(_describe(a, True, lift) for a in args),
        tuple((k, _describe(v, True, lift)) for k, v in sorted(kwargs.items())),
    )


def split_args(
    args: tuple, kwargs: dict, lift: bool = False
) -> tuple[list[torch.Tensor], Callable]:
    """The tensors among the top-level arguments, and how to put them back.

    With ``lift``, top-level Python floats are among them, as 0-d tensors of
    the default dtype (a KL weight that changes every step is then an input
    of one program, not a constant of a new one each step).
    """

    def is_input(value: Any) -> bool:
        return isinstance(value, torch.Tensor) or (lift and _lifted(value))

    def as_tensor(value: Any) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value
        return torch.tensor(value, dtype=torch.get_default_dtype())

    slots = [i for i, a in enumerate(args) if is_input(a)]
    keys = [k for k, v in kwargs.items() if is_input(v)]
    tensors = [as_tensor(args[i]) for i in slots] + [as_tensor(kwargs[k]) for k in keys]

    def rebuild(values: Sequence[torch.Tensor]) -> tuple[tuple, dict]:
        new_args, new_kwargs = list(args), dict(kwargs)
        for i, v in zip(slots, values):
            new_args[i] = v
        for k, v in zip(keys, values[len(slots) :]):
            new_kwargs[k] = v
        return tuple(new_args), new_kwargs

    return tensors, rebuild


def _user_line(exc: BaseException) -> str:
    """The innermost frame of the traceback outside torch, pyro and guide_core."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if not frame.filename.startswith(_OWN):
            return f"{frame.filename}:{frame.lineno} ({frame.name}: {frame.line})"
    last = frames[-1] if frames else None
    return f"{last.filename}:{last.lineno}" if last else "an unknown line"


class _SharedWrite(Exception):
    """A result reused by two calls was written to: capture again without reuse."""


class StepProgram:
    """A recorded step: call it with the params and the tensor args.

    Attributes
    ----------
    graph : torch.fx.GraphModule
        The captured aten program.
    used : tuple of bool
        Which params got a gradient (the others keep ``grad = None``, as
        under Pyro's ``SVI``).
    finite : torch.Tensor or None
        After a call, whether its loss and gradients were all finite.
    compiled : bool
        Whether calls go through inductor (``torch.compile``'s back end).
    """

    def __init__(self, graph: torch.fx.GraphModule, used: tuple[bool, ...]):
        self.graph, self.used, self.compiled = graph, used, False
        self._run: Callable = graph
        self.finite: torch.Tensor | None = None
        self.replays = 0  # counted by the trainer, for its checks

    def compile(self) -> None:
        """Route calls through inductor, ``torch.compile``'s back end.

        The program goes to inductor directly (``torch._inductor.compile``),
        not through ``torch.compile``'s frame capture: the graph is already
        captured, and the :func:`signature` this program is keyed on plays
        the part of dynamo's guards, whose check and frame wrapper cost about
        85 us a call here, a fifth of a small model's whole compiled step.
        The next call compiles, on its inputs. Random operations keep torch's
        own generator (``fallback_random``), so the compiled program draws
        what the recorded one draws; large matrix-vector products stay BLAS
        calls (:func:`~.for_inductor.blas_products`).
        """
        graph = copy.deepcopy(self.graph)
        blas_products(graph)

        def first_call(*inputs: torch.Tensor) -> Any:
            self._run = compile_graph(graph, list(inputs))
            return self._run(*inputs)

        self._run, self.compiled = first_call, True

    def uncompile(self) -> None:
        """Route calls back to the recorded program."""
        self._run, self.compiled = self.graph, False

    @contextlib.contextmanager
    def as_recorded(self) -> Iterator[None]:
        """Within the block, calls run the recorded program (to time it)."""
        run, compiled = self._run, self.compiled
        self._run, self.compiled = self.graph, False
        try:
            yield
        finally:
            self._run, self.compiled = run, compiled

    def __call__(
        self, params: Sequence[torch.Tensor], tensors: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """Run the step: the loss and one gradient per param (None if unused).

        :attr:`finite` is then a boolean tensor: True when the loss and every
        gradient of this call are finite (False may also mean that a sum of
        finite values overflowed; :func:`~.eager.check_finite` decides).
        """
        with torch.no_grad():
            out = self._run(*params, *tensors)
        self.finite = out[-1]
        grads = iter(out[1:-1])
        return out[0], [next(grads) if u else None for u in self.used]


def record(
    loss_fn: LossFn,
    model: Callable,
    guide: Callable,
    params: Sequence[tuple[str, torch.Tensor]],
    args: tuple,
    kwargs: dict,
    reuse: bool = True,
    lift: bool = False,
) -> tuple[StepProgram, float]:
    """Capture one step of ``loss_fn``; return the program and the seconds taken.

    The capture runs the step once for real (with validation off: its checks
    read values); the caller forks the random state around it. With
    ``reuse``, a forward call repeated on the same inputs is computed once
    (:class:`~.repeats.ReuseRepeats`: one backward pass for both uses); if a
    result so shared is written to later, the step is captured again
    without it. With ``lift``, top-level Python floats are inputs (see
    :func:`split_args`).

    Raises
    ------
    NotRecordable
        When the step reads a tensor's value into Python (``.item()``,
        data-dependent control flow, a data-dependent shape), uses params it
        was not given, or fails under capture; the message names the line.
    """
    names = [n for n, _ in params]
    leaves = [p for _, p in params]
    tensors, rebuild = split_args(args, kwargs, lift)
    used: list[bool] = []
    seen: dict[str, torch.Tensor | None] = {}  # param site -> its leaf, if known

    def step(*flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ps = list(flat[: len(leaves)])
        new_args, new_kwargs = rebuild(flat[len(leaves) :])
        repeats = ReuseRepeats() if reuse else contextlib.nullcontext()
        with poutine.trace(param_only=True) as capture, repeats:
            loss = loss_fn(model, guide, new_args, new_kwargs)
        if reuse and repeats.stale():
            raise _SharedWrite
        seen.update(param_leaves(capture.trace))
        if not torch.is_tensor(loss) or not loss.requires_grad:
            raise NotRecordable("the loss does not depend on any parameter")
        grads = torch.autograd.grad(loss, ps, allow_unused=True)
        used[:] = [g is not None for g in grads]
        kept = [g for g in grads if g is not None]
        loss = loss.detach()
        # one flag for the NaN stop, so a finite step reads one value back
        return (loss, *kept, all_sums_finite([loss, *kept]))

    start = time.perf_counter()
    try:
        with pyro.validation_enabled(False):
            graph = make_fx(step)(*leaves, *tensors)
    except NotRecordable:
        raise
    except _SharedWrite:
        spent = time.perf_counter() - start  # the discarded capture counts too
        program, seconds = record(
            loss_fn, model, guide, params, args, kwargs, False, lift
        )
        return program, spent + seconds
    except Exception as exc:  # noqa: BLE001 - any capture failure means eager
        what = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "value out of a tracing tensor" in what or "data-dependent" in what:
            what = "it reads a tensor's value into Python"
        raise NotRecordable(f"{what} at {_user_line(exc)}") from exc
    # a param the step reads but was not given would be a constant of the
    # program; a module-local one (no param store entry) is known by its module
    given = {id(p) for p in leaves}
    extra = sorted(
        n
        for n, leaf in seen.items()
        if n not in names and leaf is not None and id(leaf) not in given
    )
    if extra:
        raise NotRecordable(f"the step uses params it was not given: {extra}")
    try:  # shorter and through the bindings; on any doubt, as captured
        graph, _ = use_bindings(simplify(copy.deepcopy(graph)), [*leaves, *tensors])
    except Exception:  # noqa: BLE001 - the captured program is still right
        pass
    return StepProgram(graph, tuple(used)), time.perf_counter() - start
