"""gantry.runtime.process and init against the real kernel: busybox containers created,
started and waited for by a forked supervisor; namespaces, exit statuses, the create/start
split, rlimits, sysctls, fds, and errors that name their step."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import container_support as cs
import linux_support as support
import pytest
import rootfs_support as rs
from gantry.linux import ns
from gantry.runtime.defaults import default_config
from gantry.runtime.process import InitHandle, run
from gantry.runtime.spec import load_spec

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    with support.host_unchanged():
        yield


def _ok(outcome: cs.Outcome, status: int = 0) -> cs.Outcome:
    assert outcome.error is None, outcome.error
    assert outcome.status == status, outcome.output
    assert outcome.children_left == []
    return outcome


# --- namespaces -------------------------------------------------------------------------------


def test_the_program_is_pid_1() -> None:
    assert _ok(cs.sh("echo $$")).lines == ["1"]


def test_only_the_containers_processes_are_visible() -> None:
    outcome = _ok(cs.sh("ls /proc; echo --; ps -o pid,comm"))
    listing, _sep, ps = outcome.output.partition("--\n")
    pids = {int(name) for name in listing.split() if name.isdigit()}
    assert 1 in pids
    assert pids <= {1, 2, 3}, pids
    ps_pids = {int(line.split()[0]) for line in ps.splitlines()[1:]}
    assert ps_pids <= {1, 2, 3, 4}, ps


def test_own_hostname_and_domainname() -> None:
    host = socket.gethostname()

    def change(config: dict[str, Any]) -> None:
        config["domainname"] = "gantry.test"

    outcome = _ok(
        cs.sh("hostname; cat /proc/sys/kernel/domainname", hostname="box-1", change=change)
    )
    assert outcome.lines == ["box-1", "gantry.test"]
    assert socket.gethostname() == host


def test_mount_table_holds_only_the_containers_mounts() -> None:
    outcome = _ok(cs.sh("cat /proc/self/mountinfo"))
    points = rs.mount_points(outcome.output)
    config = default_config(["/bin/true"], "rootfs")
    allowed = [m["destination"] for m in config["mounts"]]
    allowed += config["linux"]["maskedPaths"] + config["linux"]["readonlyPaths"]
    assert points[0] == "/"
    for point in points[1:]:
        assert any(point == a or point.startswith(a + "/") for a in allowed), point
    host_points = set(rs.mount_points(Path("/proc/self/mountinfo").read_text()))
    container_side = set(allowed) | {"/"}
    leaked = {p for p in points if p in host_points} - container_side
    assert not any(p.startswith(("/work", "/tmp", "/home", "/root")) for p in points), points
    assert not {p for p in leaked if not p.startswith("/sys/fs/cgroup/")}, leaked


def test_network_namespace_has_only_loopback_and_it_is_up() -> None:
    outcome = _ok(cs.sh("ls /sys/class/net; cat /sys/class/net/lo/flags"))
    interfaces, flags = outcome.lines[:-1], outcome.lines[-1]
    assert interfaces == ["lo"]
    assert int(flags, 16) & 0x1, "lo is not up"


def test_joins_a_network_namespace_by_path() -> None:
    with support.holder(lambda: ns.unshare(ns.CLONE_NEWNET)) as held:
        path = f"/proc/{held.pid}/ns/net"
        expected = os.readlink(path)

        def change(config: dict[str, Any]) -> None:
            for entry in config["linux"]["namespaces"]:
                if entry["type"] == "network":
                    entry["path"] = path

        outcome = _ok(cs.sh("readlink /proc/self/ns/net", change=change))
    assert outcome.lines == [expected]
    assert expected != os.readlink("/proc/self/ns/net")


@pytest.mark.skipif(not Path("/proc/self/ns/time").exists(), reason="no time namespaces")
def test_time_namespace_offsets() -> None:
    ten_days = 10 * 86400

    def change(config: dict[str, Any]) -> None:
        config["linux"]["namespaces"].append({"type": "time"})
        config["linux"]["timeOffsets"] = {"boottime": {"secs": ten_days, "nanosecs": 0}}

    outcome = _ok(cs.sh("cat /proc/uptime", change=change))
    host_uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert float(outcome.output.split()[0]) >= host_uptime + ten_days - 5


def test_a_container_without_proc() -> None:
    """The init itself needs no /proc after pivot_root (the bounding set is dropped with
    the host's cap_last_cap). Masking needs one, in rootfs: no masked paths here."""

    def change(config: dict[str, Any]) -> None:
        config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/proc"]
        config["linux"]["maskedPaths"] = []
        config["linux"]["readonlyPaths"] = []

    outcome = _ok(cs.sh("ls -A /proc | wc -l; echo $$", change=change))
    assert outcome.lines == ["0", "1"]


# --- exit statuses and signals ----------------------------------------------------------------


def test_exit_code_propagates() -> None:
    _ok(cs.sh("exit 7"), status=7)


def test_sigkill_gives_137() -> None:
    def kill(handle: InitHandle, _output: cs.Output) -> None:
        handle.kill(signal.SIGKILL)

    _ok(cs.run_container(["/bin/sleep", "60"], after_start=kill), status=137)


def test_run_returns_the_status() -> None:
    with rs.bundle_dir() as (bundle, _rootfs):
        spec = load_spec(default_config(["/bin/sh", "-c", "exit 3"], "rootfs"))
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        try:
            status = support.run_in_child(lambda: run(spec, bundle, stdio=(null, null, null)))
        finally:
            os.close(null)
    assert status == 3


# --- the create/start split -------------------------------------------------------------------


def test_nothing_runs_before_start() -> None:
    marker = "tmp/started"

    def before(handle: InitHandle, _output: cs.Output) -> dict[str, Any]:
        rootfs = Path(f"/proc/{handle.pid}/root")
        time.sleep(0.2)
        return {
            "started": (rootfs / marker).exists(),
            "state": cs.status_field(handle.pid, "State"),
            "comm": Path(f"/proc/{handle.pid}/comm").read_text().strip(),
        }

    def after(handle: InitHandle, output: cs.Output) -> bool:
        assert output.wait_for("touched\n")
        return Path(f"/proc/{handle.pid}/root/{marker}").exists()

    outcome = _ok(
        cs.sh(f"touch /{marker}; echo touched; sleep 0.5", before_start=before, after_start=after)
    )
    assert outcome.before_start["started"] is False
    assert outcome.before_start["state"].startswith("S")  # waiting for start, not running
    assert outcome.before_start["comm"] != "sh"
    assert outcome.after_start is True


def test_handle_start_time_names_the_process() -> None:
    def before(handle: InitHandle, _output: cs.Output) -> bool:
        fields = Path(f"/proc/{handle.pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[19]) == handle.start_time

    assert _ok(cs.sh("true", before_start=before)).before_start is True


def test_closing_an_unstarted_handle_kills_and_reaps_the_init() -> None:
    with rs.bundle_dir() as (bundle, _rootfs):
        spec = load_spec(default_config(["/bin/true"], "rootfs"))

        def supervise() -> dict[str, Any]:
            from gantry.runtime.process import create_init

            handle = create_init(spec, bundle=bundle)
            pid = handle.pid
            handle.close()
            return {"status": handle.wait(), "alive": Path(f"/proc/{pid}").exists()}

        result = support.run_in_child(supervise)
    assert result == {"status": 137, "alive": False}


# --- process attributes -----------------------------------------------------------------------


def test_cwd_env_and_home() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["cwd"] = "/tmp"
        config["process"]["env"] = ["PATH=/bin", "FOO=bar baz"]

    outcome = _ok(cs.sh('pwd; echo "$FOO"; echo "$HOME"; echo "$PATH"', change=change))
    assert outcome.lines == ["/tmp", "bar baz", "/root", "/bin"]


def test_executable_is_looked_up_in_the_containers_path() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["env"] = ["PATH=/nowhere:/bin"]

    assert _ok(cs.run_container(["sh", "-c", "echo found"], change=change)).lines == ["found"]


def test_rlimits_are_applied() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["rlimits"] = [
            {"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 4096},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        ]

    outcome = _ok(cs.sh("ulimit -n; ulimit -Hn; ulimit -c", change=change))
    assert outcome.lines == ["2048", "4096", "0"]


def test_oom_score_adj_is_inherited() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["oomScoreAdj"] = 321

    assert _ok(cs.sh("cat /proc/self/oom_score_adj", change=change)).lines == ["321"]


def test_umask() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["user"]["umask"] = 0o077

    assert _ok(cs.sh("umask", change=change)).lines == ["0077"]


def test_sysctls_are_written_in_the_containers_namespaces() -> None:
    host_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    host_shmmni = Path("/proc/sys/kernel/shmmni").read_text()

    def change(config: dict[str, Any]) -> None:
        config["linux"]["sysctl"] = {
            "net.ipv4.ip_forward": "1",
            "kernel.shmmni": "1234",
            "net/ipv4/conf/lo/forwarding": "1",
        }

    outcome = _ok(
        cs.sh(
            "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni"
            " /proc/sys/net/ipv4/conf/lo/forwarding",
            change=change,
        )
    )
    assert outcome.lines == ["1", "1234", "1"]
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host_forward
    assert Path("/proc/sys/kernel/shmmni").read_text() == host_shmmni


def test_only_stdio_and_extra_fds_reach_the_container() -> None:
    leaked = os.open("/etc/hostname", os.O_RDONLY)
    os.set_inheritable(leaked, True)  # a careless host fd, open in the supervisor too
    extra_r, extra_w = os.pipe()
    os.write(extra_w, b"through fd 3\n")
    os.close(extra_w)
    try:
        outcome = _ok(
            cs.sh("ls /proc/self/fd; echo --; cat <&3", extra_fds=(extra_r,)),
        )
    finally:
        os.close(leaked)
        os.close(extra_r)
    listing, _sep, text = outcome.output.partition("--\n")
    fds = sorted(int(name) for name in listing.split())
    assert fds[:4] == [0, 1, 2, 3]
    assert len(fds) == 5, fds  # plus the fd ls reads the directory through
    assert text == "through fd 3\n"


# --- failures name their step -----------------------------------------------------------------


def _failed(outcome: cs.Outcome, step: str, stage: str = "create") -> dict[str, Any]:
    assert outcome.error is not None, outcome.output
    assert outcome.error["step"] == step, outcome.error
    assert outcome.error["stage"] == stage
    assert outcome.children_left == []
    return outcome.error


def test_bad_cwd_fails_at_the_cwd_step() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["cwd"] = "/does/not/exist"

    error = _failed(cs.sh("true", change=change), "cwd")
    assert "/does/not/exist" in error["message"]


def test_cwd_that_is_a_file_fails_at_the_cwd_step() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["cwd"] = "/etc/passwd"

    _failed(cs.sh("true", change=change), "cwd")


def test_missing_executable_fails_at_create() -> None:
    error = _failed(cs.run_container(["no-such-program"]), "exec")
    assert "executable file not found" in error["message"]


def test_exec_failure_is_reported_by_start() -> None:
    def prepare(_bundle: Path, rootfs: Path) -> None:
        junk = rootfs / "bin" / "junk"
        junk.write_bytes(b"\x00\x01 not a program")
        junk.chmod(0o755)

    outcome = cs.run_container(["/bin/junk"], prepare=prepare)
    error = _failed(outcome, "exec", stage="start")
    assert "Exec format error" in error["message"]
    assert outcome.status == 126


def test_rootfs_failure_names_the_step() -> None:
    def change(config: dict[str, Any]) -> None:
        config["mounts"].append(
            {"destination": "/data", "type": "bind", "source": "/no/such/source"}
        )

    error = _failed(cs.sh("true", change=change), "rootfs")
    assert "mounts[" in error["message"]


def test_rlimit_above_the_runtimes_hard_limit_fails_at_rlimits() -> None:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("the runtime's own RLIMIT_NOFILE is unlimited")
    from gantry.linux import caps

    if caps.cap_number("CAP_SYS_RESOURCE") in caps.capget().effective:
        pytest.skip("the runtime holds CAP_SYS_RESOURCE and may raise any limit")

    def change(config: dict[str, Any]) -> None:
        config["process"]["rlimits"] = [
            {"type": "RLIMIT_NOFILE", "soft": hard + 1, "hard": hard + 1}
        ]

    _failed(cs.sh("true", change=change), "rlimits")


def _read_console(handle: InitHandle, _output: cs.Output) -> str:
    """Everything the container writes to its terminal, until its last holder is gone."""
    fd = handle.console_fd
    handle.console_fd = -1
    data = b""
    try:
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: every slave fd closed
                break
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return data.decode(errors="replace")


def test_terminal_makes_a_pty_the_stdio_controlling_terminal_and_console() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["terminal"] = True
        config["process"]["consoleSize"] = {"height": 33, "width": 111}

    outcome = cs.sh(
        "for n in 0 1 2; do readlink /proc/self/fd/$n; done; cat /proc/1/stat; echo;"
        " stat -L -c '%t:%T' /proc/self/fd/0 /dev/console; stty size; exit 4",
        change=change,
        after_start=_read_console,
        prepare=lambda _bundle, rootfs: (rootfs / "bin" / "stty").symlink_to("busybox"),
    )
    assert outcome.error is None, outcome
    assert outcome.status == 4
    assert outcome.output == ""  # nothing went to the original stdio
    lines = [line.strip() for line in outcome.after_start.splitlines() if line.strip()]
    assert lines[:3] == ["/dev/pts/0"] * 3, lines
    stat_fields = lines[3].rsplit(")", 1)[1].split()
    session, tty_nr = int(stat_fields[3]), int(stat_fields[4])
    assert session == 1  # setsid: PID 1 leads its own session
    assert tty_nr == os.makedev(136, 0)  # ... whose controlling terminal is pts/0
    assert lines[4] == lines[5] == "88:0"  # /dev/console is the same pty (136 = 0x88)
    assert lines[6] == "33 111"


def test_bad_namespace_path_fails_in_the_first_child() -> None:
    def change(config: dict[str, Any]) -> None:
        config["linux"]["namespaces"].append({"type": "ipc", "path": "/no/such/ns"})
        config["linux"]["namespaces"] = [
            entry
            for entry in config["linux"]["namespaces"]
            if "path" in entry or entry["type"] != "ipc"
        ]

    error = _failed(cs.sh("true", change=change), "join-namespaces")
    assert "/no/such/ns" in error["message"]


def test_user_namespace_without_root_mapped_fails_at_user_namespace() -> None:
    def change(config: dict[str, Any]) -> None:
        config["linux"]["namespaces"].append({"type": "user"})
        mapping = [{"containerID": 1000, "hostID": 100000, "size": 1000}]
        config["linux"]["uidMappings"] = mapping
        config["linux"]["gidMappings"] = mapping

    _failed(cs.sh("true", change=change), "user-namespace")


# --- a parent that never hangs ----------------------------------------------------------------


def _create_with_patched_init(replacement: Any, timeout: float) -> dict[str, Any]:
    """create_init in a supervisor whose copy of prepare_rootfs is ``replacement``."""
    from gantry.runtime import init
    from gantry.runtime.process import ContainerInitError, create_init

    with rs.bundle_dir() as (bundle, _rootfs):
        spec = load_spec(default_config(["/bin/true"], "rootfs"))

        def supervise() -> dict[str, Any]:
            init.prepare_rootfs = replacement  # only in this forked supervisor
            try:
                create_init(spec, bundle=bundle, timeout=timeout).close()
            except ContainerInitError as exc:
                return {
                    "step": exc.step,
                    "message": exc.message,
                    "children": sorted(support.children()),
                }
            return {"step": None}

        return support.run_in_child(supervise)


def _die(*_args: Any, **_kwargs: Any) -> None:
    os._exit(9)  # not a signal to itself: PID 1 of a pid namespace ignores those


def _hang(*_args: Any, **_kwargs: Any) -> None:
    time.sleep(3600)


def test_an_init_that_dies_without_a_word_is_reported() -> None:
    result = _create_with_patched_init(_die, timeout=20)
    assert result["step"] == "init"
    assert "exit status 9" in result["message"]
    assert result["children"] == []


def test_an_init_that_hangs_meets_the_deadline() -> None:
    result = _create_with_patched_init(_hang, timeout=1.0)
    assert result["step"] == "init"
    assert "timed out" in result["message"]  # the init sleeps an hour: it was cut off
    assert result["children"] == []


def test_fd_layout_survives_overlapping_numbers() -> None:
    """The socket and the sources may sit on the very numbers the layout fills."""
    import json

    from gantry.runtime.init import SyncChannel
    from gantry.runtime.process import _lay_out_fds

    def high(fd: int) -> int:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 20)

    def child() -> dict[str, Any]:
        a_r, _a_w = os.pipe()
        b_r, _b_w = os.pipe()
        out_r, out_w = os.pipe()
        left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        a, b, out = high(a_r), high(b_r), high(out_w)
        expected = [os.fstat(fd).st_ino for fd in (a, out, out, b, a)]
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.dup2(left.fileno(), 4, inheritable=False)  # where the second extra fd goes
                channel = SyncChannel(socket.socket(fileno=4))
                _lay_out_fds(channel, (a, out, out), (b, a))
                report = {
                    "inodes": [os.fstat(fd).st_ino for fd in range(5)],
                    "inheritable": [os.get_inheritable(fd) for fd in range(5)],
                    "channel": channel.fileno(),
                    "cloexec": not os.get_inheritable(channel.fileno()),
                    "open": sorted(int(n) for n in os.listdir("/proc/self/fd")),
                }
                os.write(1, json.dumps(report).encode())
                channel.send("ping")
                code = 0
            finally:
                os._exit(code)
        os.close(out_w)
        os.close(out)
        data = b""
        while chunk := os.read(out_r, 65536):
            data += chunk
        ping = right.recv(64).decode()
        os.waitpid(pid, 0)
        return {"report": json.loads(data), "expected": expected, "ping": ping}

    result = support.run_in_child(child)
    report = result["report"]
    assert report["inodes"] == result["expected"]
    assert all(report["inheritable"])
    assert report["channel"] == 5 and report["cloexec"]
    assert report["open"][:6] == [0, 1, 2, 3, 4, 5]
    assert len(report["open"]) == 7  # plus the fd listdir read /proc/self/fd through
    assert result["ping"] == '{"type": "ping"}'
