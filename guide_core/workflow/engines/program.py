"""Capture one SVI step as a tensor program, and replay it.

The step is the function ``(params..., tensor args...) -> (loss, grads...)``:
the guide's draws, the model's log density, the ELBO and its gradients. It is
captured once by the core's capture layer (:mod:`guide_core.core.capture`:
``make_fx``, then shortened bit for bit and called through torch's
bindings), at the level of aten operations, backward pass included; the
random draws are operations of the program (``aten.normal_``,
``aten.randperm``, ...), so every replay draws afresh. The parameters are
the param store's own tensors, passed in (never copied), so they stay in
Pyro's param store under Pyro's names. A program holds for one
:func:`signature` of its inputs.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyro
import torch
from pyro import poutine

from ...core.capture import NotCapturable, capture, shorten, signature, split_args
from ...core.private_torch import compile_graph
from .eager import all_sums_finite, param_leaves
from .for_inductor import blas_products
from .losses import LossFn, NotRecordable
from .repeats import ReuseRepeats

__all__ = ["StepProgram", "record", "signature", "split_args"]


class _SharedWrite(Exception):
    """A result reused by two calls was written to: capture again without reuse."""


_PASS = (NotRecordable, _SharedWrite)  # raised by the step: not capture failures


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
            graph = capture(step, [*leaves, *tensors], passthrough=_PASS)
    except NotRecordable:
        raise
    except _SharedWrite:
        spent = time.perf_counter() - start  # the discarded capture counts too
        program, seconds = record(
            loss_fn, model, guide, params, args, kwargs, False, lift
        )
        return program, spent + seconds
    except NotCapturable as exc:
        raise NotRecordable(str(exc)) from exc.__cause__
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
    # shorter and through the bindings; on any doubt, as captured
    graph = shorten(graph, [*leaves, *tensors])
    return StepProgram(graph, tuple(used)), time.perf_counter() - start
