"""Benchmark: the memory Gantry keeps per running container, at 50 containers.

Starts N busybox ``sleep`` containers the way the agent does (the warm launcher, each
container's stdout/stderr drained by its shim into a CRI log file), then sums the
proportional set size (``Pss`` of ``/proc/<pid>/smaps_rollup``) of everything Gantry
keeps for them: the shim processes, and the launcher, which serves every container and
is counted as its share (launcher PSS / N). The containers' own processes are not
Gantry's and are left out, as conmon's figure leaves out the container.

Anchors: conmon (Podman/CRI-O's per-container monitor, the same job as the shim) needs
about 1.2 MiB PSS per container (the figure the issue cites); conmon is not installable on
this machine, so that figure is quoted, not measured. runc, measured here in the same run
with detached containers, keeps no process at all per container (and so records no exit
status and drains no output). The target is under 1 MiB per container. Everything is
deleted at the end. Not a test: it asserts nothing.

    .venv/bin/python bench/overhead.py [--containers N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
CONMON_KIB = 1.2 * 1024
TARGET_KIB = 1024


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss for {pid}")


def make_bundle(bundle: Path) -> None:
    from gantry.runtime.defaults import DEFAULT_CAPABILITIES, default_config
    from gantry.runtime.seccomp_default import default_seccomp_config

    rootfs = bundle / "rootfs"
    for name in ("bin", "dev", "etc", "proc", "sys", "tmp"):
        (rootfs / name).mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in ("sh", "sleep"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    config = default_config(["/bin/sh", "-c", "echo started; exec sleep 600"], "rootfs")
    config["linux"]["seccomp"] = default_seccomp_config(DEFAULT_CAPABILITIES)
    (bundle / "config.json").write_text(json.dumps(config))


def wait_exec(pid: int, name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    comm = Path(f"/proc/{pid}/comm")
    while comm.read_text().strip() != name and time.monotonic() < deadline:
        time.sleep(0.005)


def gantry_figures(work: Path, count: int) -> tuple[float, float, int]:
    """(shim KiB per container, launcher KiB, log lines seen) with ``count`` containers."""
    from gantry.runtime import supervisor as sv
    from gantry.runtime.launcher import Launcher
    from gantry.runtime.shim import LogOptions

    root = work / "gantry"
    logs = work / "logs"
    logs.mkdir()
    shims: list[int] = []
    launcher = Launcher.start(stderr=subprocess.DEVNULL)
    try:
        for index in range(count):
            cid = f"ovh{index}-{os.getpid()}"
            log = LogOptions(logs / f"{cid}.log", max_size=1024 * 1024, max_files=1)
            recorded = launcher.create(root, cid, work / "bundle", log=log)
            sv.start(sv.find(root, cid))
            shims.append(recorded.shim_pid)
        for pid in shims:
            wait_exec(pid, "gantry-shim")
        time.sleep(0.5)  # the containers print their line; the shims log it
        running = sum(1 for c in sv.list_containers(root) if c.status == "running")
        if running != count:
            raise SystemExit(f"only {running} of {count} containers run")
        shim_total = sum(pss_kib(pid) for pid in shims)
        launcher_kib = pss_kib(launcher.pid)
        lines = sum(len(p.read_text().splitlines()) for p in logs.iterdir())
    finally:
        for container in sv.list_containers(root):
            sv.delete(container, force=True)
        launcher.close()
    return shim_total / count, launcher_kib, lines


def runc_figures(runc: str, work: Path, count: int) -> int:
    """Processes runc leaves per detached running container (other than the container)."""
    root = work / "runc"
    ids = [f"ovhr{index}-{os.getpid()}" for index in range(count)]
    before = {p.name for p in Path("/proc").iterdir() if p.name.isdigit()}
    started: list[str] = []
    try:
        for cid in ids:
            with open(os.devnull, "wb") as null:
                subprocess.run(
                    [runc, "--root", str(root), "run", "-d", "--bundle", str(work / "bundle"), cid],
                    stdin=subprocess.DEVNULL,
                    stdout=null,
                    stderr=null,
                    check=True,
                )
            started.append(cid)
        inits = set()
        for cid in started:
            state = subprocess.run(
                [runc, "--root", str(root), "state", cid], capture_output=True, check=True
            )
            inits.add(str(json.loads(state.stdout)["pid"]))
        after = {p.name for p in Path("/proc").iterdir() if p.name.isdigit()}
        extra = []
        for pid in after - before - inits:
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm == "runc":
                extra.append(pid)
        return len(extra)
    finally:
        for cid in started:
            subprocess.run(
                [runc, "--root", str(root), "delete", "--force", cid],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--containers", type=int, default=50)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("overhead: needs root")
        return 0
    if not BUSYBOX.exists():
        print("overhead: needs a static /bin/busybox")
        return 0
    runc = shutil.which("runc")
    with tempfile.TemporaryDirectory(prefix="gantry-bench-") as scratch:
        work = Path(scratch)
        make_bundle(work / "bundle")
        shim_kib, launcher_kib, lines = gantry_figures(work, args.containers)
        runc_left = runc_figures(runc, work, args.containers) if runc else None
    n = args.containers
    per_container = shim_kib + launcher_kib / n
    print(f"overhead: {n} running busybox sleep containers, logs on (PSS, KiB)")
    print(f"  gantry shim per container             {shim_kib:8.1f} KiB")
    share = launcher_kib / n
    print(f"  gantry launcher (one per agent)       {launcher_kib:8.1f} KiB  ({share:.1f} each)")
    print(
        f"  gantry per container, all included    {per_container:8.1f} KiB"
        f"   {per_container / CONMON_KIB:5.2f} x conmon"
    )
    print(f"  log lines written by the shims        {lines:8d}")
    print(f"  conmon (quoted, not installable here) {CONMON_KIB:8.1f} KiB")
    if runc_left is not None:
        left = runc_left / n
        print(f"  runc: processes left per container    {left:8.1f}  (0 KiB: runc keeps nothing)")
    else:
        print("  runc not installed: no measured anchor")
    verdict = "met" if per_container < TARGET_KIB else "not met"
    print(f"  target: under {TARGET_KIB} KiB per container: {per_container:.1f} KiB ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
