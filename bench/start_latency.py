"""Benchmark: run-to-exit of ``/bin/true`` in a fresh container, Gantry against ``runc run``.

One busybox bundle (Gantry's hardened default config.json: every namespace but user, a
cgroup, the rootfs bind-mounted, no terminal, and Docker's default seccomp profile unless
``--no-seccomp``) is run N times sequentially by each of:

- ``runc run`` — the anchor;
- Gantry's fast path — the warm launcher the agent uses (``gantry.runtime.launcher``):
  create in the launcher, then start, wait for the exit record, delete, from this
  (already running) client process, as the agent does;
- ``gantry-runtime run`` — Gantry's command line, a fresh Python process each time.

The three are interleaved so drift in the machine's load hits them alike; each has its
own ``--root``. Printed: median and p95 of the whole run (create, start, wait, delete)
and each one's ratio to runc's median measured in this same run. The issue's target is
a fast-path median at most 0.8 x runc's. Not a test: it asserts nothing.

    .venv/bin/python bench/start_latency.py [--runs N] [--no-seccomp]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

RUNTIME = Path(sys.executable).parent / "gantry-runtime"
BUSYBOX = Path("/bin/busybox")


def make_bundle(
    bundle: Path, *, seccomp: bool = True, args: tuple[str, ...] = ("/bin/true",)
) -> None:
    from gantry.runtime.defaults import DEFAULT_CAPABILITIES, default_config
    from gantry.runtime.seccomp_default import default_seccomp_config

    rootfs = bundle / "rootfs"
    for name in ("bin", "dev", "etc", "proc", "sys", "tmp"):
        (rootfs / name).mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in ("true", "sh", "sleep"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    config = default_config(list(args), "rootfs")
    if seccomp:
        config["linux"]["seccomp"] = default_seccomp_config(DEFAULT_CAPABILITIES)
    (bundle / "config.json").write_text(json.dumps(config))


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def timed(action: Callable[[], int]) -> float:
    started = time.perf_counter()
    code = action()
    elapsed = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"a run exited {code}")
    return elapsed


def command(argv: list[str], env: dict[str, str] | None = None) -> Callable[[], int]:
    def go() -> int:
        # Warnings (the profile's syscalls this build has no number for) are not timed.
        return subprocess.run(
            argv, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False
        ).returncode

    return go


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each (default 20)")
    parser.add_argument("--no-seccomp", action="store_true", help="bundle without seccomp")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("start_latency: needs root")
        return 0
    if not BUSYBOX.exists():
        print("start_latency: needs a static /bin/busybox")
        return 0
    from gantry.runtime.launcher import Launcher

    runc = shutil.which("runc")
    with tempfile.TemporaryDirectory(prefix="gantry-bench-") as scratch:
        work = Path(scratch)
        bundle = work / "bundle"
        make_bundle(bundle, seccomp=not args.no_seccomp)
        launcher = Launcher.start(stderr=subprocess.DEVNULL)
        try:
            fast_root = work / "fast"
            modes: dict[str, Callable[[str], Callable[[], int]]] = {}
            if runc:
                modes["runc run"] = lambda cid: command(
                    [runc, "--root", str(work / "runc"), "run", "--bundle", str(bundle), cid]
                )
            modes["gantry fast path"] = lambda cid: lambda: launcher.run(fast_root, cid, bundle)
            # The command line as installed: with its bytecode cached (pip compiles it at
            # install; here it goes to a cache of the bench's own, filled by the warm-up).
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
            modes["gantry-runtime run"] = lambda cid: command(
                [str(RUNTIME), "--root", str(work / "cli"), "run", "--bundle", str(bundle), cid],
                env,
            )
            # One warm-up run each (page cache, the launcher's first fork), not counted.
            for make in modes.values():
                timed(make("warmup"))
            times: dict[str, list[float]] = {name: [] for name in modes}
            for index in range(args.runs):
                for name, make in modes.items():
                    times[name].append(timed(make(f"bench{index}")))
        finally:
            launcher.close()
    profile = "no seccomp" if args.no_seccomp else "default seccomp profile"
    print(
        f"start_latency: {args.runs} sequential runs each of /bin/true in a busybox bundle "
        f"({profile}; create+start+wait+delete)"
    )
    print(
        "  (fast path: warm launcher + this client; gantry-runtime: bytecode cached, as installed)"
    )
    anchor = statistics.median(times["runc run"]) if runc else None
    for name, samples in times.items():
        median = statistics.median(samples)
        line = (
            f"  {name:<20} median {median * 1000:7.1f} ms   "
            f"p95 {percentile(samples, 0.95) * 1000:7.1f} ms"
        )
        if anchor:
            line += f"   {median / anchor:5.2f} x runc"
        print(line)
    if anchor:
        fast = statistics.median(times["gantry fast path"]) / anchor
        verdict = "met" if fast <= 0.8 else "not met"
        print(f"  target: fast path median <= 0.80 x runc: {fast:.2f} x ({verdict})")
    else:
        print("  runc not installed: no anchor, no ratios")
    return 0


if __name__ == "__main__":
    sys.exit(main())
