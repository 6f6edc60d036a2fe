"""The ``guide-core`` command line (also ``python -m guide_core``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import registry

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
            flags = ", ".join(f for f in _FLAGS if caps.get(f)) or "-"
            line = f"  {name:<36} {spec.class_name:<32} plugin: {spec.plugin}"
            print(line)
            print(f"      {spec.summary}")
            print(f"      handles: {flags}")
            if spec.backends:
                print(f"      back ends: {', '.join(spec.backends)}")
            if spec.extras:
                print(f"      needs: {', '.join(spec.extras)}")
    backends = reg.backends()
    if backends:
        print("\nAutoGaussian back ends:")
        for name, spec in backends.items():
            print(f"  {name:<12} {spec.summary} (plugin: {spec.plugin})")
    inits = reg.init_strategies()
    print("\ninit strategies (init_loc_fn=<name>): " + ", ".join(inits))
    broken = reg.broken()
    if broken:
        print("\nbroken plugins:")
        for name, b in broken.items():
            print(f"  {name}: {type(b.error).__name__}: {b.error}")
            print(f"      from {b.source}")
            if args.verbose:
                print("      " + b.traceback.replace("\n", "\n      "))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="guide-core", description="Automatic variational guides for Pyro models."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    list_parser = commands.add_parser(
        "list", help="list installed guides by family, with capabilities and back ends"
    )
    list_parser.add_argument(
        "-v", "--verbose", action="store_true", help="show broken plugins' tracebacks"
    )
    list_parser.set_defaults(run=_list)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
