"""The warm launcher against the real kernel: busybox containers created through it are
the same as ``supervisor.create``'s (state directory, exec.fifo gate, shim, cgroup), its
errors are the same exceptions, and its containers outlive it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import linux_support as support
import pytest
import rootfs_support as rs
from gantry.runtime import state as st
from gantry.runtime import supervisor as sv
from gantry.runtime.defaults import DEFAULT_CAPABILITIES, default_config
from gantry.runtime.launcher import Launcher, LauncherError
from gantry.runtime.process import ContainerInitError
from gantry.runtime.seccomp_default import default_seccomp_config
from gantry.runtime.shim import LogOptions
from gantry.runtime.spec import SpecError

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]

APPLETS = ("sleep", "grep")
TIMEOUT = 30.0
Change = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def launcher() -> Iterator[Launcher]:
    with Launcher.start(stderr=subprocess.DEVNULL) as started:
        yield started


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    with support.host_unchanged():
        yield


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A --root of the test's own; whatever a failed test left there is force-deleted."""
    path = tmp_path / "root"
    yield path
    leftovers = sv.list_containers(path)
    for container in leftovers:
        sv.delete(container, force=True)
    assert [c.id for c in leftovers] == [], "the test left containers behind"


@pytest.fixture
def bundle(tmp_path: Path) -> Callable[..., Path]:
    def build(args: list[str], change: Change | None = None, name: str = "bundle") -> Path:
        directory = tmp_path / name
        directory.mkdir()
        rootfs = rs.make_bundle(directory)
        for applet in APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
        config = default_config(args, "rootfs")
        if change is not None:
            change(config)
        (directory / "config.json").write_text(json.dumps(config))
        return directory

    return build


def _id() -> str:
    return f"ln-{uuid.uuid4().hex[:12]}"


def test_run_returns_the_exit_code_and_leaves_nothing(
    launcher: Launcher, root: Path, bundle: Callable[..., Path]
) -> None:
    cid = _id()
    assert launcher.run(root, cid, bundle(["/bin/sh", "-c", "exit 3"])) == 3
    assert not (root / cid).exists()


def test_create_is_supervisor_create(
    launcher: Launcher, root: Path, bundle: Callable[..., Path], tmp_path: Path
) -> None:
    cid = _id()
    out = tmp_path / "out"
    with out.open("wb") as out_f:
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            recorded = launcher.create(
                root,
                cid,
                bundle(["/bin/sh", "-c", "echo hello from $$"]),
                stdio=(null, out_f.fileno(), out_f.fileno()),
            )
        finally:
            os.close(null)
    container = sv.find(root, cid)
    assert container.status == "created"
    assert container.state == recorded
    assert (root / cid / st.FIFO_FILE).exists()
    assert recorded.cgroup.endswith(cid)
    # The shim is a separate process that is not ours: the launcher's (a subreaper).
    assert recorded.shim_pid != os.getpid()
    # It reports before it execs the shim in its own place: wait for the exec.
    deadline = time.monotonic() + TIMEOUT
    comm = Path(f"/proc/{recorded.shim_pid}/comm")
    while comm.read_text().strip() != "gantry-shim" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert comm.read_text().strip() == "gantry-shim"
    sv.start(container)
    record = sv.wait_exit(sv.find(root, cid), TIMEOUT)
    assert record is not None
    assert record.exit_code == 0
    assert out.read_text() == "hello from 1\n"  # PID 1 of its own namespace
    sv.delete(sv.find(root, cid))
    assert not (root / cid).exists()


def test_the_default_seccomp_profile_comes_from_the_cache(
    launcher: Launcher, root: Path, bundle: Callable[..., Path], tmp_path: Path
) -> None:
    def seccomp(config: dict[str, Any]) -> None:
        config["linux"]["seccomp"] = default_seccomp_config(DEFAULT_CAPABILITIES)

    assert launcher.ping()["cached"] >= 1  # compiled while warming up
    before = launcher.ping()["cached"]
    log = tmp_path / "c.log"
    script = "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status"
    cid = _id()
    code = launcher.run(root, cid, bundle(["/bin/sh", "-c", script], seccomp), log=LogOptions(log))
    assert code == 0
    text = [line.split(" ", 3)[3] for line in log.read_text().splitlines()]
    assert "Seccomp:\t2" in text
    assert "NoNewPrivs:\t1" in text
    assert launcher.ping()["cached"] == before  # the same program: nothing new compiled


def test_errors_are_the_supervisors(
    launcher: Launcher, root: Path, bundle: Callable[..., Path], tmp_path: Path
) -> None:
    good = bundle(["/bin/true"])
    with pytest.raises(st.StateError, match="bad/id"):
        launcher.create(root, "bad/id", good)

    def bad_field(config: dict[str, Any]) -> None:
        config["process"]["cwd"] = "relative"

    with pytest.raises(SpecError, match=r"process\.cwd"):
        launcher.create(root, _id(), bundle(["/bin/true"], bad_field, name="bad"))
    with pytest.raises(ContainerInitError) as failed:
        launcher.create(
            root,
            _id(),
            bundle(["/bin/true"], lambda c: c["root"].update(path="gone"), name="noroot"),
        )
    assert failed.value.step == "rootfs"
    with pytest.raises(sv.RuntimeError_, match="log_path"):
        launcher.create(root, _id(), good, log=LogOptions(tmp_path / "no" / "such" / "dir" / "log"))
    with pytest.raises(sv.RuntimeError_, match=r"no config\.json"):
        launcher.create(root, _id(), tmp_path)
    cid = _id()
    launcher.create(root, cid, good)
    with pytest.raises(st.StateError, match="already exists"):
        launcher.create(root, cid, good)
    sv.delete(sv.find(root, cid), force=True)
    # Every failure left nothing under the root but what was deleted.
    assert sorted(p.name for p in root.iterdir()) == []


def test_containers_outlive_the_launcher(root: Path, bundle: Callable[..., Path]) -> None:
    cid = _id()
    with Launcher.start(stderr=subprocess.DEVNULL) as own:
        recorded = own.create(root, cid, bundle(["/bin/sleep", "60"]))
        sv.start(sv.find(root, cid))
        launcher_pid = own.pid
    with pytest.raises(ProcessLookupError):
        os.kill(launcher_pid, 0)  # reaped by close()
    assert sv.find(root, cid).status == "running"
    sv.kill(sv.find(root, cid), signal.SIGKILL)
    record = sv.wait_exit(sv.find(root, cid), TIMEOUT)
    assert record is not None
    assert record.exit_code == 128 + signal.SIGKILL
    sv.delete(sv.find(root, cid))
    # With the launcher gone the shim was re-parented to the next subreaper up, which
    # may be this test process: reap it then.
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            if os.waitpid(recorded.shim_pid, os.WNOHANG)[0]:
                break
        except ChildProcessError:
            break
        time.sleep(0.05)


def test_a_closed_launcher_says_so(root: Path, bundle: Callable[..., Path]) -> None:
    own = Launcher.start(stderr=subprocess.DEVNULL)
    own.close()
    with pytest.raises(LauncherError, match="closed"):
        own.create(root, _id(), bundle(["/bin/true"]))


def test_an_inline_config_wins_over_the_bundles(
    launcher: Launcher, root: Path, bundle: Callable[..., Path]
) -> None:
    directory = bundle(["/bin/true"])
    config = json.loads((directory / "config.json").read_text())
    config["process"]["args"] = ["/bin/sh", "-c", "exit 4"]
    config["annotations"] = {f"note{i}": "x" * 100 for i in range(2000)}  # a big message
    assert launcher.run(root, _id(), directory, config=config) == 4


def test_a_garbled_request_is_answered_and_the_launcher_goes_on(
    launcher: Launcher, root: Path, bundle: Callable[..., Path]
) -> None:
    # What a buggy client could send: not JSON, not an object, an unknown op, no fds.
    for raw in (b"{not json", b"[1, 2]", b'{"op": "explode"}', b'{"op": "create", "id": "x"}'):
        launcher._sock.send(raw)  # the wire itself, as a broken client would use it
        reply = launcher._receive(TIMEOUT)
        assert reply["ok"] is False
        assert reply["error"] == "value", reply
    assert launcher.run(root, _id(), bundle(["/bin/true"])) == 0
