"""The ``guide-core`` command line (also ``python -m guide_core``).

``list`` shows the installed guides; ``fit`` fits one guide to a model and prints
the summary and k-hat; ``compare`` fits several and prints one table. With no
``MODULE:FUNCTION`` the model is the built-in eight-schools example. Mistakes in
what the user typed are one-line errors with exit status 2 (``--debug`` shows
the traceback).
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import torch

from .. import registry
from ..registry.checks import accepts, default_init
from ..registry.errors import RegistryError
from ..workflow.engines.choose import ENGINES
from ..workflow.engines.process_group import (
    DistributedError,
    PeerFailed,
    is_main_process,
    join,
)
from ..workflow.report.comparison import Comparison
from .examples import EXAMPLES
from .inputs import UsageError, check_model, load_data, load_model
from .reporting import add_report_option, check_report, compare_report, fit_report

__all__ = ["main"]

_FLAGS = (
    "continuous",
    "discrete",
    "subsample",
    "jit",
    "mean_field",
    "median",
    "quantiles",
)


def _list(args: argparse.Namespace) -> int:
    reg = registry.default_registry()
    families = reg.families()
    print(f"{len(reg)} guides in {len(families)} families")
    for family, names in families.items():
        print(f"\n[{family}]")
        for name in names:
            spec = reg.info(name)
            caps = spec.capabilities.as_dict()
            print(f"  {name:<36} {spec.class_name:<32} plugin: {spec.plugin}")
            print(f"      {spec.summary}")
            print(
                f"      handles: {', '.join(f for f in _FLAGS if caps.get(f)) or '-'}"
            )
            if spec.backends:
                print(f"      back ends: {', '.join(spec.backends)}")
            if spec.extras:
                print(f"      needs: {', '.join(spec.extras)}")
    if reg.backends():
        print("\nAutoGaussian back ends:")
        for name, spec in reg.backends().items():
            print(f"  {name:<12} {spec.summary} (plugin: {spec.plugin})")
    print("\ninit strategies (init_loc_fn=<name>): " + ", ".join(reg.init_strategies()))
    if reg.broken():
        print("\nbroken plugins:")
        for name, b in reg.broken().items():
            print(f"  {name}: {type(b.error).__name__}: {b.error}")
            print(f"      from {b.source}")
            if args.verbose:
                print("      " + b.traceback.replace("\n", "\n      "))
    return 0


def _problem(args: argparse.Namespace) -> tuple[Callable, tuple, dict[str, Any], str]:
    """Return ``(model, args, kwargs, label)`` for the model the user chose."""
    if args.model is None:
        if args.data is not None:
            raise UsageError("--data needs a model: give MODULE:FUNCTION as well")
        model, data = EXAMPLES["eight_schools"]
        return model, (), data(), "eight_schools (built-in example)"
    model = load_model(args.model)
    model_args, model_kwargs = load_data(args.data)
    check_model(model, model_args, model_kwargs)
    return model, model_args, model_kwargs, args.model


def _default_guides() -> list[str]:
    """Continuous guides that can be built from the model alone (``auto`` aside:
    its parts are among them)."""
    names = []
    for spec in registry.default_registry():
        if not spec.capabilities.continuous or spec.extras or spec.name == "auto":
            continue
        try:
            params = list(inspect.signature(spec.factory).parameters.values())[1:]
        except (TypeError, ValueError):
            continue
        required = [
            p
            for p in params
            if p.default is p.empty
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        if not required:
            names.append(spec.name)
    return names


def _fit(name: str, problem: tuple, args: argparse.Namespace, progress: bool) -> Any:

    model, model_args, model_kwargs, _ = problem
    pyro.clear_param_store()
    if args.seed is not None:
        pyro.set_rng_seed(args.seed)
    kwargs = {}
    init = getattr(args, "init", None)
    if init and name != "auto" and _takes_init(name):
        kwargs["init_loc_fn"] = init
    guide = registry.make(name, model, **kwargs)
    try:
        return _run_fit(model, guide, model_args, model_kwargs, args, progress)
    except DistributedError as exc:
        exc.guide = guide  # what was learned up to the last completed step
        raise


def _run_fit(
    model: Callable,
    guide: Any,
    model_args: tuple,
    model_kwargs: dict[str, Any],
    args: argparse.Namespace,
    progress: bool,
) -> Any:
    from ..workflow.fitting.loop import fit

    return fit(
        model,
        guide,
        *model_args,
        optim=None if args.lr is None else pyro.optim.Adam({"lr": args.lr}),
        start=None if args.no_start else "pathfinder",
        steps=args.steps,
        tol=args.tol,
        progress=progress,
        khat=not args.no_khat,
        khat_samples=args.khat_samples,
        engine=args.engine,
        **model_kwargs,
    )


def _takes_init(name: str) -> bool:
    """Whether the guide uses an ``init_loc_fn`` (not a deprecated, ignored one)."""
    spec = registry.info(name)
    return accepts(spec, "init_loc_fn") and default_init(spec) is not None


def _elbo(result: Any) -> float:
    tail = result.losses[-min(len(result.losses), 50) :]
    return -sum(tail) / len(tail) if tail else float("nan")


def _fit_command(args: argparse.Namespace) -> int:
    problem = _problem(args)
    model, model_args, model_kwargs, label = problem
    if args.guide != "auto":
        registry.info(args.guide)  # unknown names fail before any work
    check_report(args)
    main = is_main_process()  # under torchrun only rank 0 talks and saves
    if main:
        print(f"fitting {args.guide} to {label}")
    try:
        result = _fit(args.guide, problem, args, progress=not args.quiet and main)
    except DistributedError as exc:
        if args.save and main and getattr(exc, "guide", None) is not None:
            from ..workflow.persist.save_load import save

            save(exc.guide, args.save)  # a peer was lost: keep what rank 0 had
            print(f"saved what was learned up to step {exc.step - 1} to {args.save}")
        raise
    if not main:
        return 0
    state = "converged" if result.converged else "stopped"
    if result.interrupted:
        state = "interrupted (what was learned is kept)"
    print(
        f"{state} after {result.steps} steps in {result.seconds:.1f} s "
        f"({result.ms_per_step:.2f} ms/step); ELBO {_elbo(result):.3f}"
    )
    print(f"engine {result.engine} ({result.engine_reason})")
    from ..workflow.draws.posterior import summary

    table = summary(
        result.guide, *model_args, num_samples=args.num_samples, **model_kwargs
    )
    print(table.table())
    if result.khat is not None:
        print(result.khat)
    if args.save:
        from ..workflow.persist.save_load import save

        save(result.guide, args.save)
        print(f"saved to {args.save}")
    fit_report(args, result, problem)
    return 0


def _compare_command(args: argparse.Namespace) -> int:
    problem = _problem(args)
    names = args.guides.split(",") if args.guides else _default_guides()
    names = [n.strip() for n in names if n.strip()]
    for name in names:
        if name != "auto":
            registry.info(name)  # unknown names fail before any fitting
    check_report(args)
    # Under torchrun every rank fits each guide in step, in one process group
    # joined here (a guide that fails then leaves it intact); rank 0 talks.
    group = join(None)
    main = is_main_process()
    try:
        if main:
            print(
                f"comparing {len(names)} guides on {problem[3]} "
                f"({args.steps} steps max)"
            )
        comparison = Comparison(problem[3])
        for name in names:
            start = time.perf_counter()
            try:
                result = _fit(name, problem, args, progress=False)
            except DistributedError as exc:
                if not isinstance(exc, PeerFailed):
                    raise  # a lost peer ends the comparison on every rank
                comparison.add_failure(name, exc, time.perf_counter() - start)
                continue
            except Exception as exc:  # noqa: BLE001 - one guide failing is a row
                if args.debug:
                    raise
                comparison.add_failure(name, exc, time.perf_counter() - start)
                continue
            comparison.add(name, result, time.perf_counter() - start)
    finally:
        if group is not None:
            group.close()
    if main:
        print(comparison.table())
        compare_report(args, comparison, problem)
    return 0


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", nargs="?", help="MODULE:FUNCTION (default: the eight-schools example)"
    )
    parser.add_argument("--data", help="model data: .npz, .pt or .csv")
    parser.add_argument("--steps", type=int, default=2000, help="maximum SVI steps")
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="plain Adam at this learning rate (default: fit's own: after a "
        "Pathfinder warm start, steps of 0.01 posterior sd; else Adam 0.01)",
    )
    parser.add_argument(
        "--no-start",
        action="store_true",
        help="no Pathfinder warm start: start where Pyro's guides start",
    )
    parser.add_argument(
        "--tol",
        type=float,
        default=0.01,
        help="relative change of the smoothed loss that counts as converged "
        "(0.01, as Stan's ADVI)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--khat-samples", type=int, default=500, help="samples for the PSIS k-hat"
    )
    parser.add_argument("--no-khat", action="store_true", help="skip the k-hat")
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="how a step runs: eager (Pyro's SVI), recorded (the step's tensor "
        "program replayed), compiled (that through torch.compile), or auto "
        "(default: recorded when possible, compiled when it pays off)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``guide-core``."""
    parser = argparse.ArgumentParser(
        prog="guide-core", description="Automatic variational guides for Pyro models."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list the installed guides")
    listing.add_argument("-v", "--verbose", action="store_true", help="tracebacks")
    listing.set_defaults(run=_list)
    fitting = commands.add_parser("fit", help="fit one guide and summarise it")
    _add_model_options(fitting)
    fitting.add_argument("--guide", default="auto_normal", help="registry name")
    fitting.add_argument(
        "--init", help="init strategy by name for guides that take init_loc_fn"
    )
    fitting.add_argument("--num-samples", type=int, default=1000, help="for summary")
    fitting.add_argument("--save", help="save the fitted guide to this file")
    fitting.add_argument("--quiet", action="store_true", help="no progress bar")
    add_report_option(fitting)
    fitting.set_defaults(run=_fit_command)
    comparing = commands.add_parser("compare", help="fit several guides, one table")
    _add_model_options(comparing)
    comparing.add_argument("--guides", help="comma-separated registry names")
    comparing.add_argument(
        "--init",
        default="median",
        help="init strategy by name, the same for every guide that takes one "
        "(default: median)",
    )
    add_report_option(comparing)
    comparing.set_defaults(run=_compare_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, RegistryError) as exc:
        if args.debug:
            raise
        message = str(exc).splitlines()[0]
        print(f"guide-core: error: {message}", file=sys.stderr)
        return 2
    except DistributedError as exc:
        if args.debug:
            raise
        print(f"guide-core: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("guide-core: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
        return 0
    finally:
        torch.set_grad_enabled(True)
