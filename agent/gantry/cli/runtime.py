"""``gantry-runtime``: the OCI runtime command line. A placeholder until the runtime lands."""

from __future__ import annotations

import sys
from collections.abc import Sequence

VERBS = ("create", "start", "state", "kill", "delete", "run", "exec", "list", "pause", "resume")
USAGE = "usage: gantry-runtime [--root DIR] {" + ",".join(VERBS) + "} [args...]"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in args if a in VERBS), None)
    print(USAGE, file=sys.stderr)
    if verb is not None:
        print(f"gantry-runtime: {verb}: not implemented yet (see issue 3)", file=sys.stderr)
    return 2
