"""The ``gantry`` command: one entry point, one module per subcommand.

A subcommand module offers ``register(subparsers)``, which adds its parser and sets
``handler`` to a function taking the parsed arguments and returning the exit status.
Later subcommands (``agent serve``, ``runtime …``, ``ps``, ``run`` …) are added to
``SUBCOMMANDS`` the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from gantry import __version__
from gantry.cli import agent, checkconfig, containers, images, networks

SUBCOMMANDS: tuple[ModuleType, ...] = (checkconfig, agent, containers, images, networks)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gantry",
        description="Gantry: run Linux containers across a fleet of hosts.",
    )
    parser.add_argument("--version", action="version", version=f"gantry {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(subparsers)
    # Listed for `gantry -h` only: main() hands `gantry runtime …` to gantry-runtime before
    # parsing, and imports the runtime only then (checkconfig does not pay for it).
    subparsers.add_parser("runtime", help="the OCI runtime (same as gantry-runtime)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["runtime"]:
        # Untouched, so `gantry runtime --help` and runc's flags reach gantry-runtime.
        from gantry.cli import runtime

        return runtime.main(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`gantry … | head`): stop quietly, and keep Python's
        # final flush from raising again on the dead pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
