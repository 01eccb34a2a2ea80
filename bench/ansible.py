"""Ansible: an idempotent container task over 20 containers, Gantry beside Podman.

Each side runs one play whose single task converges 20 containers (a loop), first to create
them (not measured), then ROUNDS more times with nothing to change (measured: wall time of
the whole `ansible-playbook` run, the same overhead on both sides). The sides alternate, so
drift on the machine hits both alike.

- Gantry: `gantry.fleet.container` against a `gantry agent serve` of the benchmark's own
  (temporary root, socket and cgroup parent), from a busybox root file system.
- Anchor: `containers.podman.podman_container` (podman with runc) from the same root file
  system (`rootfs: true`). The collection comes from PyPI's `ansible` package (pinned below,
  downloaded once with pip into .cache/bench-dl), unpacked into .cache/bench-collections. This
  machine's root lacks CAP_SYS_RESOURCE, so podman's default rlimits cannot be set; the
  anchor's containers get `nofile` and `nproc` limits below the host's instead.

- Floor: the same loop of `ansible.builtin.ping`, the least any module can cost per item
  (Ansible's own per-item work: templating, AnsiballZ, a Python start per item).

- Gantry as a module: the Gantry play again with `gantry_fleet_direct: false`, so the module
  runs on the host the usual way instead of in the controller's worker (docs/ansible.md,
  "Where the modules run").

Prints the median of each, the ratio Gantry / Podman (the goal is at most 0.5), the ratio
of Gantry as a module, and that one net of the floor (what the modules themselves cost).
Nothing is asserted: this is a measurement, not a test.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
COUNT = 20
ROUNDS = 5
PODMAN_COLLECTIONS = ROOT / ".cache" / "bench-collections"
ANSIBLE_PACKAGE = "ansible==12.3.0"  # carries containers.podman 1.18.0
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def api(sock: str, method: str, path: str) -> object:
    connection = UnixHTTPConnection(sock)
    connection.request(method, path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return json.loads(body) if body else None


def busybox_rootfs(directory: Path) -> None:
    for sub in ("bin", "etc", "tmp", "proc", "sys", "dev", "root"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", directory / "bin" / "busybox")
    applets = subprocess.run(
        ["/bin/busybox", "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = directory / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (directory / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (directory / "etc" / "group").write_text("root:x:0:\n")


def podman_collection() -> bool:
    """containers.podman unpacked from a downloaded `ansible` wheel, if there is one."""
    target = PODMAN_COLLECTIONS / "ansible_collections" / "containers" / "podman"
    if target.is_dir():
        return True
    downloads = ROOT / ".cache" / "bench-dl"
    wheels = sorted(downloads.glob("ansible-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", ANSIBLE_PACKAGE,
             "-d", str(downloads)],
            check=False,
        )  # fmt: skip
        wheels = sorted(downloads.glob("ansible-*.whl"))
    if not wheels:
        return False
    with zipfile.ZipFile(wheels[-1]) as wheel:
        for name in wheel.namelist():
            if name.startswith("ansible_collections/containers/podman/"):
                wheel.extract(name, PODMAN_COLLECTIONS)
    return target.is_dir()


def play(
    path: Path, module: str, options: dict[str, object], variables: dict[str, object] | None = None
) -> None:
    lines = ["- hosts: localhost", "  gather_facts: false"]
    if variables:
        lines += ["  vars:"] + [
            f"    {key}: {json.dumps(value)}" for key, value in variables.items()
        ]
    lines += [
        "  tasks:",
        f"    - name: {COUNT} containers",
        f"      {module}:",
    ]
    lines += [f"        {key}: {json.dumps(value)}" for key, value in options.items()]
    lines += [f"      loop: {json.dumps(list(range(COUNT)))}"]
    path.write_text("\n".join(lines) + "\n")


def run_play(playbook: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{playbook.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    recap = [line for line in done.stdout.splitlines() if line.startswith("localhost")]
    return elapsed, recap[-1] if recap else ""


def main() -> int:
    if shutil.which("podman") is None or not podman_collection():
        print("bench/ansible.py: podman or the containers.podman collection is missing; skipped")
        return 0
    work = Path(tempfile.mkdtemp(prefix="gantry-bench-ansible."))
    cgroup = "gantry-bench-" + work.name.rsplit(".", 1)[-1]
    sock = str(work / "agent.sock")
    rootfs = work / "rootfs"
    busybox_rootfs(rootfs)
    agent = subprocess.Popen(
        [str(VENV_BIN / "gantry"), "agent", "serve", "--root", str(work / "root"),
         "--socket", sock, "--cgroup-parent", "/" + cgroup],
        stdout=(work / "agent.log").open("w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    podman_names = [f"gbench-{index}" for index in range(COUNT)]
    try:
        for _attempt in range(300):
            try:
                api(sock, "GET", "/readyz")
                break
            except OSError:
                time.sleep(0.1)
        env = dict(
            os.environ,
            ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
            ANSIBLE_COLLECTIONS_PATH=f"{ROOT / '.collections'}:{PODMAN_COLLECTIONS}",
            GANTRY_AGENT_URL="unix://" + sock,
            ANSIBLE_NOCOLOR="1",
        )
        gantry_play = work / "gantry.yml"
        podman_play = work / "podman.yml"
        play(gantry_play, "gantry.fleet.container", {
            "name": "gbench-{{ item }}", "rootfs": str(rootfs), "command": COMMAND,
            "memory": "32m", "network_mode": "none",
        })  # fmt: skip
        play(podman_play, "containers.podman.podman_container", {
            "name": "gbench-{{ item }}", "image": str(rootfs), "rootfs": True,
            "command": COMMAND, "memory": "32m", "network": "none", "state": "started",
            "ulimit": ["nofile=4096:4096", "nproc=4096:4096"],
        })  # fmt: skip
        # The same task with the module run on the host the usual way (AnsiballZ, a new
        # Python per item) instead of in the controller's worker: what the action plugin saves.
        module_play = work / "gantry_module.yml"
        play(module_play, "gantry.fleet.container", {
            "name": "gbench-{{ item }}", "rootfs": str(rootfs), "command": COMMAND,
            "memory": "32m", "network_mode": "none",
        }, {"gantry_fleet_direct": False})  # fmt: skip
        floor_play = work / "floor.yml"
        play(floor_play, "ansible.builtin.ping", {"data": "pong"})
        for playbook in (gantry_play, podman_play):
            _elapsed, recap = run_play(playbook, env)
            print(f"converge {playbook.stem}: {recap}")
        times: dict[str, list[float]] = {
            "gantry": [],
            "podman": [],
            "floor": [],
            "gantry_module": [],
        }
        for _round in range(ROUNDS):
            for playbook in (gantry_play, podman_play, floor_play, module_play):
                elapsed, recap = run_play(playbook, env)
                if "changed=0" not in recap:
                    print(f"warning: {playbook.stem} not idempotent: {recap}")
                times[playbook.stem].append(elapsed)
        gantry = statistics.median(times["gantry"])
        podman = statistics.median(times["podman"])
        floor = statistics.median(times["floor"])
        module_path = statistics.median(times["gantry_module"])
        print(
            f"idempotent task over {COUNT} containers, median of {ROUNDS} runs of "
            "ansible-playbook (wall time):"
        )
        print(f"  gantry.fleet.container            {gantry:7.2f} s  {times['gantry']}")
        print(f"  containers.podman.podman_container {podman:7.2f} s  {times['podman']}")
        print(f"  ansible.builtin.ping (floor)       {floor:7.2f} s  {times['floor']}")
        print(
            f"  gantry.fleet.container as a module {module_path:7.2f} s  {times['gantry_module']}"
            "  (gantry_fleet_direct: false)"
        )
        print(f"  ratio gantry-as-a-module/podman: {module_path / podman:.2f}")
        print(f"  ratio gantry/podman: {gantry / podman:.2f} (goal <= 0.5)")
        print(
            f"  as modules, net of the floor: {(module_path - floor) / (podman - floor):.2f}; a "
            f"module costing nothing would give {floor / podman:.2f}"
        )
        return 0
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", *podman_names],
                       capture_output=True, check=False)  # fmt: skip
        try:
            for summary in api(sock, "GET", "/v1/containers") or []:  # type: ignore[union-attr]
                api(sock, "DELETE", f"/v1/containers/{summary['name']}?force=true")
        except OSError:
            pass
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
        for controller in Path("/sys/fs/cgroup").iterdir():
            leftover = controller / cgroup
            if leftover.is_dir():
                leftover.rmdir()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
