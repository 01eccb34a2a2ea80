"""gantry-runtime against the real kernel: busybox bundles created, started, signalled,
paused, listed and deleted through the command line, each test with its own --root; the
status always read back from the kernel, and nothing left behind (state, cgroup, process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import linux_support as support
import pytest
import rootfs_support as rs
from gantry.runtime.defaults import default_config

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]

RUNTIME = Path(sys.executable).parent / "gantry-runtime"
GANTRY = Path(sys.executable).parent / "gantry"
APPLETS = ("sleep", "kill")
TIMEOUT = 30.0

Change = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str


class Runtime:
    """Runs ``gantry-runtime --root ROOT …`` as a subprocess; its stdout and stderr (which
    a created container inherits) go to files, so no pipe is held open by the container."""

    def __init__(self, root: Path, scratch: Path) -> None:
        self.root = root
        self.scratch = scratch
        self.calls = 0

    def __call__(self, *args: str, program: tuple[str, ...] = (str(RUNTIME),)) -> Result:
        self.calls += 1
        out = self.scratch / f"out-{self.calls}"
        err = self.scratch / f"err-{self.calls}"
        with out.open("wb") as out_f, err.open("wb") as err_f:
            completed = subprocess.run(
                [*program, "--root", str(self.root), *args],
                stdin=subprocess.DEVNULL,
                stdout=out_f,
                stderr=err_f,
                timeout=TIMEOUT,
                check=False,
            )
        return Result(completed.returncode, out.read_text(), err.read_text())

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.rc == 0, result
        return result

    def state(self, container_id: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.ok("state", container_id).out)
        return data

    def recorded(self, container_id: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / container_id / "state.json").read_text())
        return data

    def wait_status(self, container_id: str, status: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        while True:
            state = self.state(container_id)
            if state["status"] == status or time.monotonic() > deadline:
                return state
            time.sleep(0.05)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    with support.host_unchanged():
        yield


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    """A runtime with its own --root; whatever a failed test left there is force-deleted,
    and no shim of this root may still run afterwards."""
    root = tmp_path / "root"
    scratch = tmp_path / "io"
    scratch.mkdir()
    rt = Runtime(root, scratch)
    yield rt
    leftovers = sorted(p.name for p in root.iterdir()) if root.exists() else []
    for name in leftovers:
        rt("delete", "--force", name)
    deadline = time.monotonic() + 5
    while _processes_mentioning(str(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes_mentioning(str(root)), "a shim of this root still runs"
    assert leftovers == [], f"the test left containers behind: {leftovers}"


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Path]:
    def build(args: list[str], change: Change | None = None, name: str = "bundle") -> Path:
        bundle = tmp_path / name
        bundle.mkdir()
        rootfs = rs.make_bundle(bundle)
        for applet in APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
        config = default_config(args, "rootfs")
        if change is not None:
            change(config)
        (bundle / "config.json").write_text(json.dumps(config))
        return bundle

    return build


def _no_pid_namespace(config: dict[str, Any]) -> None:
    # A pid namespace's init ignores signals it has no handler for (pid_namespaces(7)),
    # even SIGKILL from inside: these tests want the program's own death by signal.
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != "pid"]


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie its parent (the host's init, for an orphaned
    shim) has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def _cgroup_dirs(path: str) -> list[Path]:
    return [p for p in Path("/sys/fs/cgroup").glob(f"*{path}") if p.is_dir()]


# --- the lifecycle ----------------------------------------------------------------------------


def test_create_start_list_ps_and_delete(
    runtime: Runtime, make_bundle: Callable[..., Path], tmp_path: Path
) -> None:
    bundle = make_bundle(["/bin/sleep", "300"])
    pid_file = tmp_path / "pid"
    runtime.ok("create", "--bundle", str(bundle), "--pid-file", str(pid_file), "c1")

    state = runtime.state("c1")
    assert state["status"] == "created"
    assert state["id"] == "c1"
    assert state["bundle"] == str(bundle)
    assert {"ociVersion", "id", "status", "pid", "bundle", "annotations"} <= set(state)
    pid = state["pid"]
    assert pid > 0
    assert pid_file.read_text() == str(pid)
    assert (runtime.root / "c1" / "exec.fifo").exists()
    assert _cmdline(pid) != ["/bin/sleep", "300"]  # waiting on the fifo, not exec'd yet

    runtime.ok("start", "c1")
    state = runtime.state("c1")
    assert (state["status"], state["pid"]) == ("running", pid)
    assert not (runtime.root / "c1" / "exec.fifo").exists()
    assert _cmdline(pid) == ["/bin/sleep", "300"]

    table = runtime.ok("list").out.splitlines()
    assert table[0].split()[:3] == ["ID", "PID", "STATUS"]
    assert table[1].split()[:3] == ["c1", str(pid), "running"]
    assert runtime.ok("list", "-q").out.split() == ["c1"]
    listed = json.loads(runtime.ok("list", "--format", "json").out)
    assert [(c["id"], c["status"]) for c in listed] == [("c1", "running")]
    assert json.loads(runtime.ok("ps", "--format", "json", "c1").out) == [pid]
    assert str(pid) in runtime.ok("ps", "c1").out

    refused = runtime("delete", "c1")
    assert refused.rc == 1
    assert refused.err.startswith("gantry-runtime: delete: ")
    assert "'c1'" in refused.err and "running" in refused.err
    assert runtime.state("c1")["status"] == "running"

    recorded = runtime.recorded("c1")
    cgroups = _cgroup_dirs(recorded["cgroup"])
    assert cgroups
    runtime.ok("delete", "--force", "c1")
    assert not (runtime.root / "c1").exists()
    assert not any(path.exists() for path in cgroups)
    assert _gone(pid)
    assert _gone(recorded["shim_pid"])
    assert runtime("state", "c1").rc == 1


def test_a_killed_container_is_stopped_with_its_exit_status(
    runtime: Runtime, make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle(["/bin/sleep", "300"], _no_pid_namespace)
    runtime.ok("create", "-b", str(bundle), "k1")
    runtime.ok("start", "k1")
    assert runtime.state("k1")["status"] == "running"
    runtime.ok("kill", "k1")  # TERM by default
    state = runtime.wait_status("k1", "stopped")
    assert (state["status"], state["pid"]) == ("stopped", 0)
    record = json.loads((runtime.root / "k1" / "exit.json").read_text())
    assert (record["exit_code"], record["signal"]) == (143, 15)
    refused = runtime("kill", "k1", "KILL")
    assert refused.rc == 1 and "stopped" in refused.err
    runtime.ok("delete", "k1")  # stopped: no --force needed
    assert not (runtime.root / "k1").exists()


def test_signal_names_and_numbers(runtime: Runtime, make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle(["/bin/sh", "-c", "trap 'exit 3' USR1; while :; do sleep 0.05; done"])
    runtime.ok("run", "--detach", "-b", str(bundle), "s1")
    assert runtime.state("s1")["status"] == "running"
    bad = runtime("kill", "s1", "SIGNOPE")
    assert (bad.rc, bad.err.strip()) == (1, "gantry-runtime: kill: unknown signal 'SIGNOPE'")
    time.sleep(0.2)  # the trap is set once the shell has run its first line
    runtime.ok("kill", "s1", "usr1")
    runtime.wait_status("s1", "stopped")
    record = json.loads((runtime.root / "s1" / "exit.json").read_text())
    assert record["exit_code"] == 3
    runtime.ok("delete", "s1")


def test_kill_all_reaches_every_process(runtime: Runtime, make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle(["/bin/sh", "-c", "sleep 300 & sleep 300 & wait"])
    runtime.ok("run", "-d", "-b", str(bundle), "a1")
    deadline = time.monotonic() + TIMEOUT
    while len(json.loads(runtime.ok("ps", "-f", "json", "a1").out)) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runtime.ok("kill", "--all", "a1", "9")
    assert runtime.wait_status("a1", "stopped")["status"] == "stopped"
    assert json.loads(runtime.ok("ps", "-f", "json", "a1").out) == []
    runtime.ok("delete", "a1")


def test_run_exits_with_the_containers_status_and_leaves_nothing(
    runtime: Runtime, make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle(["/bin/sh", "-c", "echo hello; exit 7"])
    result = runtime("run", "--bundle", str(bundle), "r1")
    assert result.rc == 7, result
    assert result.out == "hello\n"  # the container wrote to run's own stdout
    assert not (runtime.root / "r1").exists()


def test_run_of_a_process_killed_by_a_signal_exits_128_plus_it(
    runtime: Runtime, make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle(["/bin/sh", "-c", "kill -KILL $$"], _no_pid_namespace)
    result = runtime("run", "--bundle", str(bundle), "r2")
    assert result.rc == 137, result
    assert not (runtime.root / "r2").exists()


def test_pause_freezes_the_container_and_resume_thaws_it(
    runtime: Runtime, make_bundle: Callable[..., Path]
) -> None:
    script = "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done"
    bundle = make_bundle(["/bin/sh", "-c", script])
    counter = bundle / "rootfs" / "tmp" / "count"
    runtime.ok("run", "-d", "-b", str(bundle), "p1")

    def count() -> int:
        deadline = time.monotonic() + TIMEOUT
        while True:
            text = counter.read_text().strip() if counter.exists() else ""
            if text:
                return int(text)
            assert time.monotonic() < deadline
            time.sleep(0.01)

    first = count()
    time.sleep(0.2)
    assert count() > first
    runtime.ok("pause", "p1")
    assert runtime.state("p1")["status"] == "paused"
    frozen = count()
    time.sleep(0.3)
    assert count() == frozen
    assert runtime("pause", "p1").rc == 1  # not running
    runtime.ok("resume", "p1")
    assert runtime.state("p1")["status"] == "running"
    time.sleep(0.3)
    assert count() > frozen
    runtime.ok("pause", "p1")
    runtime.ok("delete", "--force", "p1")  # a paused container is killed too
    assert not (runtime.root / "p1").exists()


def test_the_supervisor_outlives_the_command_that_created_it(
    runtime: Runtime, make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle(["/bin/sleep", "300"])
    runtime.ok("create", "-b", str(bundle), "o1")  # the create command has exited
    recorded = runtime.recorded("o1")
    shim = recorded["shim_pid"]
    assert Path(f"/proc/{shim}/comm").read_text().strip() == "gantry-shim"
    assert os.getsid(shim) != os.getsid(0)  # a session of its own, not the caller's
    init_parent = Path(f"/proc/{recorded['pid']}/stat").read_text().rsplit(")", 1)[1].split()[1]
    assert int(init_parent) == shim  # the init is the shim's child
    runtime.ok("start", "o1")  # from another process again
    assert runtime.state("o1")["status"] == "running"
    runtime.ok("delete", "--force", "o1")


def test_a_created_container_can_be_deleted(
    runtime: Runtime, make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle(["/bin/sleep", "300"])
    runtime.ok("create", "-b", str(bundle), "d1")
    pid = runtime.state("d1")["pid"]
    runtime.ok("delete", "d1")
    assert not (runtime.root / "d1").exists()
    assert _gone(pid)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["-x", "a/b", "..", "with space", ".hidden"])
def test_a_bad_id_is_refused_and_names_it(
    runtime: Runtime, make_bundle: Callable[..., Path], bad_id: str
) -> None:
    bundle = make_bundle(["/bin/true"])
    result = runtime("create", "--bundle", str(bundle), "--", bad_id)
    assert result.rc == 1, result
    assert result.err.startswith("gantry-runtime: create: invalid container id ")
    assert repr(bad_id) in result.err
    assert len(result.err.splitlines()) == 1
    assert not runtime.root.exists() or list(runtime.root.iterdir()) == []


@pytest.mark.parametrize("verb", ["state", "start", "kill", "delete", "pause", "resume", "ps"])
def test_an_unknown_container_is_a_clear_error(runtime: Runtime, verb: str) -> None:
    result = runtime(verb, "nope")
    assert result.rc == 1, result
    assert result.err == f"gantry-runtime: {verb}: container 'nope' does not exist\n"


def test_delete_force_of_an_unknown_container_is_quiet(runtime: Runtime) -> None:
    assert runtime("delete", "--force", "nope") == Result(0, "", "")


def test_a_second_create_of_the_same_id_is_refused(
    runtime: Runtime, make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle(["/bin/sleep", "300"])
    runtime.ok("create", "-b", str(bundle), "twice")
    pid = runtime.state("twice")["pid"]
    again = runtime("create", "-b", str(bundle), "twice")
    assert again.rc == 1
    assert again.err == "gantry-runtime: create: container 'twice' already exists\n"
    state = runtime.state("twice")
    assert (state["status"], state["pid"]) == ("created", pid)  # the first one untouched
    runtime.ok("delete", "twice")


def test_an_invalid_config_names_the_field_and_leaves_nothing(
    runtime: Runtime, make_bundle: Callable[..., Path]
) -> None:
    def break_it(config: dict[str, Any]) -> None:
        config["process"]["cwd"] = "relative/dir"

    bundle = make_bundle(["/bin/true"], break_it)
    result = runtime("create", "-b", str(bundle), "bad")
    assert result.rc == 1, result
    assert "process.cwd" in result.err
    assert result.err.startswith("gantry-runtime: create: ")
    assert len(result.err.splitlines()) == 1
    assert not (runtime.root / "bad").exists()
    assert _cgroup_dirs("/gantry/bad") == []


def test_a_failing_init_step_is_reported_and_leaves_nothing(
    runtime: Runtime, make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle(["/bin/no-such-program"])
    result = runtime("create", "-b", str(bundle), "f1")
    assert result.rc == 1, result
    assert "step exec" in result.err and "no-such-program" in result.err
    assert not (runtime.root / "f1").exists()
    assert _cgroup_dirs("/gantry/f1") == []


def test_terminal_flags_are_checked_before_anything_is_made(
    runtime: Runtime, make_bundle: Callable[..., Path], tmp_path: Path
) -> None:
    def terminal(config: dict[str, Any]) -> None:
        config["process"]["terminal"] = True

    bundle = make_bundle(["/bin/sh"], terminal)
    result = runtime("create", "-b", str(bundle), "t1")
    assert result.rc == 1 and "--console-socket" in result.err, result
    assert "process.terminal" in result.err, result
    plain = make_bundle(["/bin/sh"], name="plain")
    socket_flag = runtime(
        "create", "-b", str(plain), "--console-socket", str(tmp_path / "sock"), "t2"
    )
    assert socket_flag.rc == 1 and "--console-socket is only for" in socket_flag.err, socket_flag
    missing = runtime("create", "-b", str(bundle), "--console-socket", str(tmp_path / "no"), "t3")
    assert missing.rc == 1 and str(tmp_path / "no") in missing.err, missing
    assert "Traceback" not in result.err + socket_flag.err + missing.err
    assert not runtime.root.exists() or list(runtime.root.iterdir()) == []


def test_usage_errors_exit_2(runtime: Runtime) -> None:
    assert runtime("create").rc == 2
    assert runtime("frobnicate", "x").rc == 2
    assert runtime("list", "--format", "yaml").rc == 2


def test_gantry_runtime_is_also_a_gantry_subcommand(
    runtime: Runtime, make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle(["/bin/sh", "-c", "exit 5"])
    via_gantry = (str(GANTRY), "runtime")
    result = runtime("run", "-b", str(bundle), "g1", program=via_gantry)
    assert result.rc == 5, result
    listed = runtime("list", "-q", program=via_gantry)
    assert (listed.rc, listed.out) == (0, "")
    missing = runtime("state", "g1", program=via_gantry)
    assert missing.err == "gantry-runtime: state: container 'g1' does not exist\n"


def test_run_forwards_its_signals_to_the_container(
    runtime: Runtime, make_bundle: Callable[..., Path], tmp_path: Path
) -> None:
    script = "trap 'echo got TERM; exit 9' TERM; echo ready; while :; do sleep 0.05; done"
    bundle = make_bundle(["/bin/sh", "-c", script])
    out = tmp_path / "run-out"
    with out.open("wb") as out_f:
        process = subprocess.Popen(
            [str(RUNTIME), "--root", str(runtime.root), "run", "-b", str(bundle), "f1"],
            stdin=subprocess.DEVNULL,
            stdout=out_f,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + TIMEOUT
            while "ready" not in out.read_text():
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.02)
            time.sleep(0.1)  # the shell has set its trap before it printed ready
            process.send_signal(signal.SIGTERM)
            assert process.wait(TIMEOUT) == 9
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(TIMEOUT)
    assert "got TERM" in out.read_text()
    assert not (runtime.root / "f1").exists()


def test_two_starts_at_once_start_the_container_once(
    runtime: Runtime, make_bundle: Callable[..., Path], tmp_path: Path
) -> None:
    bundle = make_bundle(["/bin/sleep", "300"])
    runtime.ok("create", "-b", str(bundle), "twostarts")
    command = [str(RUNTIME), "--root", str(runtime.root), "start", "twostarts"]
    errors = [tmp_path / "start-err-1", tmp_path / "start-err-2"]
    handles = [err.open("wb") for err in errors]
    try:
        starts = [
            subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=f, stderr=f) for f in handles
        ]
        codes = sorted(p.wait(TIMEOUT) for p in starts)
    finally:
        for f in handles:
            f.close()
    assert codes == [0, 1]
    said = "".join(err.read_text() for err in errors)
    assert (
        said
        == "gantry-runtime: start: container 'twostarts' is running, not created: cannot start it\n"
    )
    assert runtime.state("twostarts")["status"] == "running"
    runtime.ok("delete", "--force", "twostarts")
