"""Benchmark: ``gantry-runtime run`` of ``/bin/true`` against ``runc run`` on this machine.

Both run the same busybox bundle (Gantry's hardened default config.json) N times each,
interleaved so drift in the machine's load hits both alike, each with its own --root;
the medians of the whole command (create, start, wait, delete) and gantry's ratio to runc
are printed. Not a test: it asserts nothing. runc is the anchor; without it, only
gantry's figures are printed.

    .venv/bin/python bench/start_latency.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNTIME = Path(sys.executable).parent / "gantry-runtime"
BUSYBOX = Path("/bin/busybox")


def make_bundle(bundle: Path) -> None:
    from gantry.runtime.defaults import default_config

    rootfs = bundle / "rootfs"
    for name in ("bin", "dev", "etc", "proc", "sys", "tmp"):
        (rootfs / name).mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    (rootfs / "bin" / "true").symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (bundle / "config.json").write_text(json.dumps(default_config(["/bin/true"], "rootfs")))


def time_run(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, stdin=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if not BUSYBOX.exists():
        print("needs a static /bin/busybox")
        return 0
    runc = shutil.which("runc")
    with tempfile.TemporaryDirectory(prefix="gantry-bench-") as scratch:
        work = Path(scratch)
        make_bundle(work / "bundle")
        commands = {"gantry-runtime run": [str(RUNTIME), "--root", str(work / "gantry")]}
        if runc:
            commands["runc run"] = [runc, "--root", str(work / "runc")]
        times: dict[str, list[float]] = {name: [] for name in commands}
        for index in range(args.runs):
            for name, prefix in commands.items():
                cid = f"bench{index}"
                times[name].append(time_run([*prefix, "run", "--bundle", f"{work}/bundle", cid]))
    gantry = statistics.median(times["gantry-runtime run"])
    print(f"runs: {args.runs} each, /bin/true in a busybox bundle (create+start+wait+delete)")
    for name, samples in times.items():
        median = statistics.median(samples)
        ratio = median / gantry
        print(f"  {name:<20} median {median * 1000:7.1f} ms   ratio to gantry {ratio:5.2f}")
    if not runc:
        print("  runc not installed: no anchor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
