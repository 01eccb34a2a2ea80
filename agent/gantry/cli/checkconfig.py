"""``gantry checkconfig``: can this kernel run Gantry containers, and what to fix if not.

A thin front end over :mod:`gantry.kernel_check` (the engine the Ansible module uses too):
it picks the features, runs the checks and prints the report as text or JSON. The exit
status is the report's: 0 every requested feature is supported, 1 a required item is
missing, 2 the kernel configuration could not be read (or the command line is wrong).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Mapping
from typing import IO, Any

from gantry import kernel_check

EPILOG = """\
features (* = checked by default):
{features}

exit status: 0 supported, 1 a required item is missing, 2 the kernel configuration
could not be read (kernel options are then "unknown", never "missing").
Colour only on a terminal, and never with NO_COLOR set or TERM=dumb."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    listing = "\n".join(
        f"  {'*' if default else ' '} {name:<11} {description}"
        for name, description, default in kernel_check.FEATURES
    )
    parser = subparsers.add_parser(
        "checkconfig",
        help="check that the kernel can run Gantry containers",
        description=(
            "Check the kernel configuration, cgroups, security modules and limits for the "
            "features Gantry needs, and probe the running kernel. Every missing item comes "
            "with the fix."
        ),
        epilog=EPILOG.format(features=listing),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="kernel configuration to check, plain or gzip (default: the running kernel's, "
        "from $CONFIG, /proc/config.gz, /boot/config-$(uname -r), …)",
    )
    parser.add_argument(
        "--feature",
        metavar="NAME",
        action="extend",
        nargs="+",
        default=[],
        help="also check these features (names separated by spaces or commas, or repeat the "
        "option); 'all' checks every feature",
    )
    parser.add_argument(
        "--only",
        action="store_true",
        help="check only the --feature ones instead of adding them to the default set",
    )
    parser.add_argument(
        "--no-probes",
        action="store_true",
        help="do not ask the running kernel (no namespaces, mounts or cgroups are created)",
    )
    parser.set_defaults(handler=run)


def select_features(names: Iterable[str], only: bool) -> list[str]:
    """The features to request: the defaults plus ``names`` (or ``names`` alone with
    ``only``). Names may be comma-separated; ``all`` means every feature. Unknown names are
    left for the engine, which rejects them with the list of valid ones."""
    wanted = [part.strip() for name in names for part in name.split(",") if part.strip()]
    every = [name for name, _description, _default in kernel_check.FEATURES]
    if "all" in wanted:
        return every
    base = (
        [] if only else [name for name, _description, default in kernel_check.FEATURES if default]
    )
    return base + [name for name in wanted if name not in base]


def use_color(stream: IO[str], environ: Mapping[str, str]) -> bool:
    """Colour only for a terminal, and not when NO_COLOR (no-color.org) or TERM=dumb say no."""
    try:
        is_tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return is_tty and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


def run(args: argparse.Namespace) -> int:
    if args.only and not args.feature:
        print("gantry checkconfig: --only needs at least one --feature", file=sys.stderr)
        return 2
    features = select_features(args.feature, args.only)
    try:
        report: dict[str, Any] = kernel_check.run_checks(
            config_path=args.config, features=features, probes=not args.no_probes
        )
    except ValueError as exc:
        print(f"gantry checkconfig: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(kernel_check.render_text(report, color=use_color(sys.stdout, os.environ)))
    sys.stdout.flush()
    return int(report["summary"]["exit_code"])
