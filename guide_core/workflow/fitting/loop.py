"""Fitting a guide: the SVI loop users otherwise write by hand.

:func:`fit` runs stochastic variational inference with a progress bar, stops
when a smoothed loss stops changing (as Stan's ADVI does), stops with an
error that names the step and the site when the loss becomes NaN or infinite
(leaving the parameters as they were before that step), keeps what was
learned when interrupted with Ctrl-C, and reports the PSIS k-hat.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import attrs
import pyro
import pyro.optim
import torch
from pyro.infer import Trace_ELBO

from ..draws.diagnostics import MIN_SAMPLES, KHat, find_nonfinite, psis_khat
from ..engines import BadStep, Settings, check_engine
from ..engines import process_group as _dist
from ..engines.scaled_steps import Travel, scaled_optim
from .arguments import check_int, check_optim, check_tol
from .convergence import _buffer_size, _converged, convergence_step
from .own_procedure import procedure_of
from .pathfinder_start import StartOutcome, pathfinder_start
from .progress import progress_bar
from .result import FitResult, NonFiniteLossError
from .svi import SVI

__all__ = ["FitResult", "NonFiniteLossError", "convergence_step", "fit"]

#: The steps a warm-started fit plans for when ``engine="auto"`` weighs a
#: compile (measured on posteriordb: 100-1,000 after a Pathfinder start).
WARM_STEPS = 500


def fit(
    model: Callable,
    guide: Callable,
    *args: Any,
    optim: Any = None,
    start: str | None = "pathfinder",
    loss: Any = None,
    steps: int = 2000,
    tol: float | None = 1e-4,
    window: int = 50,
    progress: bool = True,
    khat: bool = True,
    khat_samples: int = 500,
    seed: int | None = None,
    engine: str = "auto",
    check_every: int | None = None,
    distributed: bool | None = None,
    **kwargs: Any,
) -> FitResult:
    """Fit ``guide`` to ``model`` by stochastic variational inference.

    Convergence follows Stan's ADVI: every ``window`` steps, the relative
    change of the mean loss over the last ``window`` steps against the
    ``window`` before is recorded; the fit has converged when the mean or the
    median of the most recent changes (at least two, at most
    ``max(2, steps // (10 * window))``) is below ``tol``.

    Parameters
    ----------
    model, guide : callable
        The Pyro model and guide.
    *args, **kwargs :
        The model's arguments.
    optim : pyro.optim.PyroOptim, optional
        Default: ``pyro.optim.Adam({"lr": 0.01})`` without a warm start;
        after one, Adam whose steps are 0.01 of each parameter's posterior
        scale (see :mod:`guide_core.workflow.engines.scaled_steps`), and the fit stops
        only when the parameters have stopped travelling (their window means
        move less than 0.05 of those scales), not on the loss alone; a step
        that only jitters is halved, and the fit ends at the running average
        of its iterates.
    start : {"pathfinder", None}
        ``"pathfinder"`` (default): run Pathfinder on the model first and
        start a Gaussian guide (AutoNormal, AutoDiagonalNormal,
        AutoMultivariateNormal, AutoLowRankMultivariateNormal, lists of them)
        at its Gaussian: location, scales and covariance. Where the model or
        guide does not allow it (discrete or subsampled sites, other
        families, distributed fits), the fit starts as before and
        ``FitResult.start`` says why. ``None``: no warm start, the loop as
        before this option existed. A guide with its own fitting procedure
        (``AutoPathfinder``) runs that instead of SVI.
    loss : pyro.infer.ELBO, optional
        Default ``Trace_ELBO()``.
    steps : int
        The most steps to run.
    tol : float or None
        Convergence tolerance on the relative change; ``None`` runs all steps.
    window : int
        Steps per smoothing window.
    progress : bool
        Show a progress bar (tqdm) with the smoothed loss; when standard
        error is not a terminal, a line every 10% of the steps or 10 s.
    khat : bool
        Estimate the PSIS k-hat of the fitted guide (see :func:`psis_khat`).
        If that fails, a warning says why and ``FitResult.khat`` is None.
    khat_samples : int
        Draws for the k-hat (at least 50).
    seed : int, optional
        Seed Pyro's random number generators first.
    engine : {"auto", "eager", "recorded", "compiled"}
        How a step runs. ``"eager"``: Pyro's ``SVI`` step. ``"recorded"``:
        the whole step (draws, densities, ELBO, gradients) captured once per
        signature of the inputs (shapes, dtypes, devices, params) as a tensor
        program, checked against eager on the same draws, then replayed, with
        one torch optimizer doing ``optim``'s update of every param (the
        params stay in Pyro's param store; ``optim`` itself is not stepped).
        ``"compiled"``: that program compiled by inductor (``torch.compile``'s
        back end), or the recorded one where the compiled turns out no
        faster (large dense algebra, where BLAS beats inductor's loops). ``"auto"``:
        Pyro's step for two steps, then recorded when possible and when the
        planned steps pay for the recording (at the measured time of Pyro's
        step, so a short fit is never slower than Pyro's), compiled when
        they pay for the compile too
        (:class:`~guide_core.workflow.engines.Costs`). Every engine is a
        loop over :class:`guide_core.SVI`. What cannot be recorded (a
        model that reads tensor values, an ELBO or optimizer
        without an exact recorded counterpart, a step that differs from
        eager) runs eager, with a warning unless
        ``"auto"`` chose. ``FitResult.engine`` and ``engine_reason`` say
        what ran and why. A recorded step replays tensor operations, not
        Python: a model whose behaviour changes with Python state between
        steps (counters, globals, Python's ``random``) needs ``"eager"``.
    check_every : int, optional
        Also check the recorded step against eager every this many steps
        (a debugging aid; a mismatch switches to eager with a warning).
    distributed : bool or None
        Fit data-parallel over the ranks of ``torch.distributed``. ``None``
        (default): when launched by ``torchrun`` with 2+ processes (or the
        process group is already initialised with 2+ ranks). The process
        group is joined if needed (gloo on CPU, NCCL on CUDA, with a timeout
        of ``GUIDE_CORE_DIST_TIMEOUT`` seconds, default 120); it stays joined
        for the next fit, and is left when a fit fails or is interrupted (so
        the peers stop at once). Every rank starts from rank 0's parameters,
        takes its own disjoint share of each subsampled plate's subsample
        (whose size must be divisible by the number of ranks), and the
        gradients are averaged with one all-reduce per step, so the
        parameters stay identical; the losses are the ranks' mean. Only rank
        0 shows progress and computes the k-hat. Every engine runs
        distributed (``"auto"`` records but does not compile on its own).

    Returns
    -------
    FitResult
        The losses, the steps run, whether it converged or was interrupted,
        the timing and the k-hat. A Ctrl-C ends the fit early and returns
        with ``interrupted=True`` and no k-hat; the parameters learned so far
        stay in the param store.

    Raises
    ------
    NonFiniteLossError
        If a loss or gradient is NaN or infinite; the message names the step
        and, where one is found, the site. The failing step is not applied.
    guide_core.workflow.engines.process_group.DistributedError
        If a peer of a distributed fit was lost or did not answer within the
        timeout; the message names this rank, the step and the cause.
    """
    if not callable(model):
        raise TypeError(f"'model' must be a Pyro model (callable): {model!r}")
    if not callable(guide):
        raise TypeError(f"'guide' must be a guide (callable): {guide!r}")
    steps = check_int("steps", steps, 1, "2000")
    window = check_int("window", window, 1, "50")
    if khat:
        check_int("khat_samples", khat_samples, MIN_SAMPLES, "500")
    tol = check_tol(tol)
    engine = check_engine(engine)
    if check_every is not None:
        check_every = check_int("check_every", check_every, 1, "100")
    if start not in ("pathfinder", None):
        raise ValueError(f"'start' must be 'pathfinder' or None: {start!r}")
    if seed is not None:
        pyro.set_rng_seed(seed)
    procedure = procedure_of(guide)
    if procedure is not None:
        return _by_procedure(procedure, model, guide, args, kwargs, khat, khat_samples)
    group = _dist.join(distributed)
    began = StartOutcome(None, "no warm start (start=None)")
    if start is not None and group is not None:
        began = StartOutcome(None, "no warm start: a distributed fit starts as before")
    elif start is not None:
        began = pathfinder_start(model, guide, args, kwargs)
    travel = None
    if began.scales is not None and optim is None:
        optim = scaled_optim(began.scales)
        travel = Travel(began.scales, window, optim.pt_optim_args["scales"])
    loss = Trace_ELBO() if loss is None else loss
    settings = Settings(
        mode=engine,
        # after a warm start the fit stops early (hundreds of steps, not
        # ``steps``): "auto" records and compiles only if those pay for it
        steps=steps if travel is None else min(steps, WARM_STEPS),
        check_every=check_every,
        who="guide_core.fit",
    )
    main = group is None or group.rank == 0
    try:
        svi = SVI(
            model,
            guide,
            check_optim(optim),
            loss,
            engine=engine,
            settings=settings,
            group=group,
        )
    except BaseException:
        if group is not None:
            group.close()
        raise
    buffer_size = _buffer_size(steps, window)
    losses: list[float] = []
    changes: list[float] = []
    converged = interrupted = False
    shown = (svi.engine, svi.reason)
    bar = progress_bar(total=steps, enabled=progress and main, desc=_desc(*shown))
    clock = time.perf_counter()
    finished = False  # a group stays joined for the next fit unless this one failed
    try:
        for number in range(1, steps + 1):
            rng = torch.get_rng_state()
            losses.append(svi.checked_step(*args, **kwargs))
            bar.update()
            if (svi.engine, svi.reason) != shown:
                shown = (svi.engine, svi.reason)
                bar.set_description_str(_desc(*shown), refresh=False)
            if number % 10 == 0 or number == steps:
                smoothed = math.fsum(losses[-window:]) / len(losses[-window:])
                bar.set_postfix_str(f"loss {smoothed:.4g}", refresh=False)
            if travel is not None:
                if travel.update() and tol is not None:
                    converged = True
                    break
            elif tol is not None and _converged(
                losses, changes, tol, window, buffer_size
            ):
                converged = True
                break
        finished = True
        if travel is not None:
            travel.settle()
    except KeyboardInterrupt:
        interrupted = True
        svi.zero_grads()
    except BadStep as bad:
        svi.zero_grads()
        bar.close()
        _raise_nonfinite(bad, model, guide, args, kwargs, rng, len(losses))
    except BaseException as exc:
        svi.zero_grads()
        if hasattr(exc, "add_note"):
            exc.add_note(f"(raised by guide_core.fit at step {len(losses) + 1})")
        raise
    finally:
        seconds = time.perf_counter() - clock + began.seconds
        bar.close()
        if group is not None and not finished:
            group.close()  # the peers see the closed connections at once
    done = len(losses)
    result = FitResult(
        guide=guide,
        losses=tuple(losses),
        steps=done,
        converged=converged,
        interrupted=interrupted,
        seconds=seconds,
        ms_per_step=1000.0 * seconds / done if done else math.nan,
        engine=svi.engine,
        engine_reason=svi.reason,
        world_size=1 if group is None else group.world_size,
        reduce_seconds=0.0 if group is None else group.reduce_seconds,
        start=began.reason,
        gradient_evaluations=began.gradient_evaluations
        + done * getattr(loss, "num_particles", 1),
    )
    if khat and not interrupted and done and main:
        result = attrs.evolve(
            result, khat=_khat(model, guide, args, kwargs, khat_samples)
        )
    return result


def _by_procedure(
    procedure: Callable,
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    khat: bool,
    khat_samples: int,
) -> FitResult:
    """Fit a guide by its own registered procedure instead of SVI."""
    clock = time.perf_counter()
    outcome = procedure(model, guide, args, kwargs, progress=False)
    seconds = time.perf_counter() - clock
    result = FitResult(
        guide=guide,
        losses=tuple(outcome.losses),
        steps=outcome.steps,
        converged=outcome.converged,
        interrupted=False,
        seconds=seconds,
        ms_per_step=1000.0 * seconds / max(outcome.steps, 1),
        engine="procedure",
        engine_reason=outcome.note,
        start="the guide's own procedure",
        gradient_evaluations=outcome.gradient_evaluations,
    )
    if khat:
        result = attrs.evolve(
            result, khat=_khat(model, guide, args, kwargs, khat_samples)
        )
    return result


_LOG = logging.getLogger("guide_core.fit")


def _desc(engine: str, reason: str) -> str:
    """The progress bar's description: the engine in a word. Why that engine
    goes to ``FitResult.engine_reason`` and to the ``guide_core.fit`` log."""
    _LOG.info("engine %s: %s", engine, reason)
    return f"fit [{engine}]"


def _khat(
    model: Callable, guide: Callable, args: tuple, kwargs: dict, num_samples: int
) -> KHat | None:
    try:
        return psis_khat(model, guide, *args, num_samples=num_samples, **kwargs)
    except KeyboardInterrupt:
        return None
    except Exception as exc:  # noqa: BLE001 - the fit is kept; say why there is no k-hat
        warnings.warn(
            f"the PSIS k-hat could not be computed: {type(exc).__name__}: {exc}",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _raise_nonfinite(
    bad: BadStep,
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    rng: torch.Tensor,
    done: int,
) -> None:
    torch.set_rng_state(rng)  # replay the failing step's draw first
    site = find_nonfinite(model, guide, args, kwargs)
    where = f"; {site}" if site else "; no site with a non-finite value was found"
    kept = f"after step {done}" if done else "at their initial values"
    raise NonFiniteLossError(
        f"{bad.what} at step {bad.step}{where}. The parameters are kept as they "
        f"were {kept}; try a smaller learning rate (optim=pyro.optim.Adam"
        "({'lr': 0.001})), a different init_loc_fn, or check the model's "
        "distributions at that site",
        step=bad.step,
        site=site,
    ) from None
