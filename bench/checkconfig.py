"""Benchmark: ``gantry checkconfig --json`` against its anchors on this machine.

Times N runs each of ``gantry checkconfig --json`` (with and without probes),
lxc-checkconfig (LXC 5.0.2) and moby's check-config.sh (Debian docker.io 20.10), all in the
same run and interleaved so drift in the machine's load hits every command alike, then
prints the medians and each command's ratio to gantry's. Not a test: it asserts nothing.

    .venv/bin/python bench/checkconfig.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ANCHORS = REPO / ".cache" / "anchors"
GANTRY = Path(sys.executable).parent / "gantry"


def commands() -> dict[str, list[str]]:
    found = {
        "gantry checkconfig --json": [str(GANTRY), "checkconfig", "--json"],
        "gantry checkconfig --json --no-probes": [
            str(GANTRY),
            "checkconfig",
            "--json",
            "--no-probes",
        ],
    }
    if (ANCHORS / "lxc-checkconfig").is_file():
        found["lxc-checkconfig"] = ["sh", str(ANCHORS / "lxc-checkconfig")]
    if (ANCHORS / "check-config.sh").is_file():
        found["moby check-config.sh"] = ["bash", str(ANCHORS / "check-config.sh")]
    return found


def run_once(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per command (default 15)")
    args = parser.parse_args()
    if not GANTRY.exists():
        print(f"no gantry console script at {GANTRY}: pip install -e agent", file=sys.stderr)
        return 2
    cmds = commands()
    if len(cmds) == 2:
        print(f"note: anchors not found under {ANCHORS} (make setup); timing gantry alone")
    env = dict(os.environ, NO_COLOR="1")
    for argv in cmds.values():  # warm the page cache and the interpreter's .pyc files
        run_once(argv, env)
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _run in range(args.runs):
        for name, argv in cmds.items():
            times[name].append(run_once(argv, env))

    reference = statistics.median(times["gantry checkconfig --json"])
    print(f"{os.uname().release}, {args.runs} runs each, interleaved; euid {os.geteuid()}")
    print(f"{'command':<40} {'median':>9} {'min':>9} {'max':>9} {'vs gantry':>10}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(
            f"{name:<40} {median * 1000:>7.1f}ms {min(samples) * 1000:>7.1f}ms "
            f"{max(samples) * 1000:>7.1f}ms {median / reference:>9.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
