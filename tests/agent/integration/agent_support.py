"""Helpers of the agent integration tests (no tests in here): a real ``gantry agent serve``
process on a unix socket under a scratch ``--root``, a client for it, busybox rootfs dirs."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import network_support as ns
import rootfs_support as rs
from gantry.cli.client import AgentClient, AgentError, ClientSettings
from gantry.engine.networking import config_from_settings
from gantry.network import NetworkConfig, NetworkManager

T = TypeVar("T")

GANTRY = Path(sys.executable).parent / "gantry"
APPLETS = ("sleep", "kill", "rm", "trap", "test", "[", "seq", "wc", "head", "cut", "grep")
START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 180.0
"""Every request of a test gives up after this long (longer than the longest server-side
wait a test asks for, 120 s) and fails naming the request, instead of hanging the run."""


def make_rootfs(directory: Path) -> Path:
    """A busybox root filesystem in ``directory/rootfs`` with the applets the tests use."""
    rootfs = rs.make_bundle(directory)
    for applet in APPLETS:
        link = rootfs / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    return rootfs


class Agent:
    """A ``gantry agent serve`` subprocess; its output goes to a file (``log``)."""

    def __init__(self, scratch: Path, extra: Sequence[str] = ()) -> None:
        self.scratch = scratch
        self.root = scratch / "root"
        self.socket = scratch / "agent.sock"
        self.log = scratch / "agent.log"
        self.extra = tuple(extra)
        self.process: subprocess.Popen[bytes] | None = None
        self.network: NetworkConfig = config_from_settings(None, self.root)
        self.client = AgentClient(
            ClientSettings(url=f"unix://{self.socket}", timeout=REQUEST_TIMEOUT)
        )

    def start(self) -> Agent:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(GANTRY),
                    "agent",
                    "serve",
                    "--root",
                    str(self.root),
                    "--socket",
                    str(self.socket),
                    *self.extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the agent exited with {self.process.returncode}: {self.log.read_text()}"
                )
            with contextlib.suppress(AgentError):
                if self.client.request("GET", "/readyz")["status"] == "ok":
                    return self
            time.sleep(0.05)
        raise AssertionError(f"the agent did not get ready: {self.log.read_text()}")

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def stop(self) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    # --- shortcuts ------------------------------------------------------------------------

    def req(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return self.client.request(method, path, **kwargs)
        except AgentError as exc:
            if exc.status == 0:  # unreachable, or no answer within REQUEST_TIMEOUT
                raise AssertionError(f"{method} {path}: {exc.detail}") from None
            raise

    def error(self, method: str, path: str, **kwargs: Any) -> AgentError:
        try:
            self.client.request(method, path, **kwargs)
        except AgentError as exc:
            if exc.status == 0:
                raise AssertionError(f"{method} {path}: {exc.detail}") from None
            return exc
        raise AssertionError(f"{method} {path} succeeded, an error was expected")

    def put(
        self, name: str, spec: dict[str, Any], state: str = "running", dry_run: bool = False
    ) -> Any:
        return self.req(
            "PUT", f"/v1/containers/{name}", body={"state": state, "dry_run": dry_run, "spec": spec}
        )

    def remove_all(self) -> None:
        for row in self.req("GET", "/v1/containers"):
            with contextlib.suppress(AgentError):
                self.req("DELETE", f"/v1/containers/{row['name']}", query={"force": "true"})


def network_settings(scratch: Path, token: str) -> dict[str, str]:
    """An agent's own network settings: default bridge, subnet, nftables table, pool of
    subnets for new networks and an empty CNI config dir, none shared with another test
    or another agent on this host (the token is in every name)."""
    subnet = ns.free_subnet()
    pool = ns.free_subnet([subnet], prefix=20)
    (scratch / "cni-conf").mkdir(exist_ok=True)
    return {
        "default_bridge": f"gt{token}",
        "default_subnet": subnet,
        "nft_table": f"gantry_t{token}",
        "subnet_pool": pool,
        "cni_config_dir": str(scratch / "cni-conf"),
    }


def network_flags(settings: dict[str, str]) -> list[str]:
    out = []
    for key, value in settings.items():
        flag = "--cni-config-dir" if key == "cni_config_dir" else f"--network-{key}"
        out += [flag.replace("_", "-"), value]
    return out


def remove_networks(config: NetworkConfig) -> None:
    """Take down every attachment and network an agent left (the agent is stopped)."""
    manager = NetworkManager(config)
    for att in manager.attachments():
        with contextlib.suppress(Exception):
            manager.detach(att.container_id)
    with contextlib.suppress(Exception):
        manager.recover(live=())
    for info in manager.list_networks():
        if info.network is not None:
            with contextlib.suppress(Exception):
                manager.remove_network(info.name, allow_default=True)


@contextlib.contextmanager
def running_agent(extra: Sequence[str] = ()) -> Iterator[tuple[Agent, Path]]:
    """An agent on its own root and socket (and network settings), and a busybox rootfs;
    on the way out every container is removed, the agent stopped, its networks removed
    and the scratch directory deleted."""
    scratch = Path(tempfile.mkdtemp(prefix="gantry-agent-"))
    (scratch / "bundle").mkdir()
    rootfs = make_rootfs(scratch / "bundle")
    # Its own parent cgroup, so other tests' containers under /gantry never mix with its own.
    token = uuid.uuid4().hex[:12]
    parent = f"/gantry-agent-test-{token}"
    net = network_settings(scratch, token[:8])
    agent = Agent(scratch, ("--cgroup-parent", parent, *network_flags(net), *extra))
    agent.network = config_from_settings(net, scratch / "root")
    try:
        agent.start()
        yield agent, rootfs
    finally:
        try:
            if agent.process is None:
                with contextlib.suppress(AssertionError):
                    agent.start()
            if agent.process is not None:
                agent.remove_all()
        finally:
            agent.stop()
            _kill_strays(agent.root)
            remove_networks(agent.network)
            stuck = _kill_leftover_processes(scratch)
            remove_cgroup_parent(parent)
            shutil.rmtree(scratch, ignore_errors=True)
    assert not stuck, f"processes of the agent left behind: {stuck}"


def _kill_leftover_processes(scratch: Path) -> list[str]:
    """Processes still naming the scratch directory once the agent is stopped (a forked
    child of the agent that never got to exec, say); killed, and returned for the test
    to fail on."""
    found: list[str] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(scratch) in cmdline:
                found.append(f"{entry.name}: {cmdline.strip()}")
                os.kill(int(entry.name), signal.SIGKILL)
    return found


def remove_cgroup_parent(parent: str) -> None:
    """Remove the test's parent cgroup from every hierarchy (the runtime removes only
    Gantry's default parent by itself)."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        with contextlib.suppress(OSError):
            (hierarchy / parent.lstrip("/")).rmdir()


def _kill_strays(root: Path) -> None:
    """Last resort for a failed test: kill every process still recorded under the root's
    runtime directory (the test fails anyway; the host stays clean)."""
    import json

    runtime = root / "runtime"
    if not runtime.is_dir():
        return
    for entry in runtime.iterdir():
        with contextlib.suppress(OSError, ValueError, KeyError):
            state = json.loads((entry / "state.json").read_text())
            for key in ("pid", "shim_pid"):
                os.kill(int(state[key]), signal.SIGKILL)


def within(seconds: float, what: str, work: Callable[[], T]) -> T:
    """``work()``'s result, or a failure naming ``what`` when it takes longer than
    ``seconds``. For clients without a timeout of their own on every step: websockets'
    sync client joins its reader thread without one when a connection goes wrong."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as exc:  # handed to the caller's thread
            outcome.append((False, exc))

    worker = threading.Thread(target=run, name=f"within {what}", daemon=True)
    worker.start()
    worker.join(seconds)
    if not outcome:
        raise AssertionError(f"{what}: no answer within {seconds} s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "a condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
