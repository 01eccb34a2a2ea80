"""``gantry runtime VERB …``: hands the rest of the command line to ``gantry-runtime``.

``gantry.cli.main`` passes everything after ``runtime`` through untouched (options such as
``--help`` or ``--root`` included); this parser only lists the subcommand in ``gantry -h``.

The runtime's modules are imported only when this subcommand runs, so the other ``gantry``
subcommands (``checkconfig`` on every host of a fleet, say) do not pay for loading them.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "runtime",
        help="the OCI runtime (same as gantry-runtime)",
        description="Gantry's OCI runtime (runc's command line); same as gantry-runtime.",
        add_help=False,
    )
    parser.add_argument("arguments", nargs=argparse.REMAINDER)

    def handler(args: argparse.Namespace) -> int:
        from gantry.cli import runtime

        return runtime.main(args.arguments)

    parser.set_defaults(handler=handler)
