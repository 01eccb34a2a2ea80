"""gantry-runtime exec on the real kernel: the exec'd process is in every namespace and
cgroup of the running container, with exactly its capabilities, no_new_privs and seccomp
filter; users, env, cwd, --process and --preserve-fds; exit codes propagate; a stopped or
paused container is refused clearly."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import container_support as cs
import linux_support as support
import pytest
import rootfs_support as rs
import runtime_cli_support as rcs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]

NAMESPACES = ("pid", "mnt", "uts", "ipc", "net", "cgroup")


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    with support.host_unchanged():
        yield


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[rcs.Runtime]:
    with rcs.runtime_in(tmp_path) as rt:
        yield rt


@pytest.fixture
def running(runtime: rcs.Runtime, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A running hardened container (default seccomp profile): its id and init pid."""
    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/sleep", "300"], seccomp=True)
    runtime.ok("run", "-d", "-b", str(bundle), "x1")
    yield "x1", int(runtime.state("x1")["pid"])
    runtime.ok("delete", "--force", "x1")


def _ns(pid: int | str) -> dict[str, str]:
    return {kind: os.readlink(f"/proc/{pid}/ns/{kind}") for kind in NAMESPACES}


def test_exec_joins_every_namespace_and_keeps_the_containers_privileges(
    runtime: rcs.Runtime, running: tuple[str, int]
) -> None:
    cid, init = running
    script = (
        "echo shell: $$; hostname;"
        " for n in pid mnt uts ipc net cgroup; do echo $n: $(readlink /proc/self/ns/$n); done;"
        " cat /proc/self/status; echo MOUNTS; cat /proc/self/mountinfo; echo PS; ps -o pid,args"
    )
    result = runtime("exec", cid, "/bin/sh", "-c", script)
    assert result.rc == 0, result
    out = result.out
    head, _sep, rest = out.partition("MOUNTS\n")
    mountinfo, _sep, ps = rest.partition("PS\n")
    fields = cs.status_fields(head)
    assert fields["shell"] not in ("", "1")  # a new process of the container's pid namespace
    assert int(fields["shell"]) < 100
    assert "inside" in head.splitlines()[1]
    for kind, link in _ns(init).items():
        assert fields[kind] == link, kind
    assert _ns(init) != _ns("self")  # they are the container's, not ours
    init_status = cs.status_fields(Path(f"/proc/{init}/status").read_text())
    for key in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb", "NoNewPrivs", "Seccomp"):
        assert fields[key] == init_status[key], key
    assert fields["Seccomp"] == "2" and fields["NoNewPrivs"] == "1"
    # The same mount table as the container's init (its own view, no host paths).
    assert rs.mount_points(mountinfo) == rs.mount_points(
        Path(f"/proc/{init}/mountinfo").read_text()
    )
    commands = [line.split(None, 1)[1] for line in ps.splitlines()[1:] if line.strip()]
    assert commands[0] == "/bin/sleep 300"  # only the container's processes are visible
    assert all("pytest" not in command for command in commands)


def test_exec_joins_the_containers_cgroup(
    runtime: rcs.Runtime, running: tuple[str, int], tmp_path: Path
) -> None:
    cid, init = running
    pid_file = tmp_path / "exec.pid"
    runtime.ok("exec", "-d", "--pid-file", str(pid_file), cid, "/bin/sleep", "300")
    pid = int(pid_file.read_text())
    assert Path(f"/proc/{pid}/cgroup").read_text() == Path(f"/proc/{init}/cgroup").read_text()
    listed = json.loads(runtime.ok("ps", "--format", "json", cid).out)
    assert pid in listed and init in listed
    # delete --force kills everything in the cgroup, the exec'd process too.
    runtime.ok("delete", "--force", cid)
    rcs.wait_for(lambda: not Path(f"/proc/{pid}/cmdline").exists() or _zombie(pid), "exec gone")
    runtime.ok("run", "-d", "-b", str(tmp_path / "bundle"), cid)  # for the fixture's delete


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


def test_exit_codes_and_signals_propagate(runtime: rcs.Runtime, running: tuple[str, int]) -> None:
    cid, _init = running
    assert runtime("exec", cid, "/bin/sh", "-c", "exit 7").rc == 7
    assert runtime("exec", cid, "/bin/sh", "-c", "kill -9 $$").rc == 137
    missing = runtime("exec", cid, "/no/such/program")
    assert missing.rc == 1
    assert "exec failed at step exec" in missing.err and "/no/such/program" in missing.err
    assert runtime.state(cid)["status"] == "running"  # the container is unharmed


def test_exec_as_another_user_with_env_and_cwd(
    runtime: rcs.Runtime, running: tuple[str, int]
) -> None:
    cid, _init = running
    result = runtime(
        "exec", "-u", "1000:1001", "-g", "7", "-e", "GREETING=hello", "--cwd", "/tmp", cid,
        "/bin/sh", "-c", "id; pwd; echo $GREETING; grep -E '^Cap(Eff|Prm)' /proc/self/status",
    )  # fmt: skip
    assert result.rc == 0, result
    lines = result.out.splitlines()
    assert lines[0].startswith("uid=1000 gid=1001") and "7" in lines[0].split("groups=")[-1]
    assert lines[1:3] == ["/tmp", "hello"]
    assert cs.status_fields("\n".join(lines[3:])) == {
        "CapEff": "0000000000000000",
        "CapPrm": "0000000000000000",
    }
    named = runtime("exec", "-u", "root", cid, "/bin/sh", "-c", "id -u")
    assert (named.rc, named.out.strip()) == (0, "0"), named


def test_exec_cap_and_no_new_privs_flags(runtime: rcs.Runtime, tmp_path: Path) -> None:
    def no_nnp(config: dict[str, Any]) -> None:
        config["process"]["noNewPrivileges"] = False

    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/sleep", "300"], no_nnp)
    runtime.ok("run", "-d", "-b", str(bundle), "c1")
    try:
        plain = cs.status_fields(runtime.ok("exec", "c1", "/bin/cat", "/proc/self/status").out)
        more = cs.status_fields(
            runtime.ok(
                "exec", "--cap", "CAP_NET_ADMIN", "--no-new-privs", "c1", "/bin/cat",
                "/proc/self/status",
            ).out
        )  # fmt: skip
    finally:
        runtime.ok("delete", "--force", "c1")
    net_admin = 1 << 12
    assert int(plain["CapEff"], 16) & net_admin == 0 and plain["NoNewPrivs"] == "0"
    assert int(more["CapEff"], 16) == int(plain["CapEff"], 16) | net_admin
    assert int(more["CapBnd"], 16) & net_admin and more["NoNewPrivs"] == "1"


def test_exec_a_process_file_and_preserved_fds(
    runtime: rcs.Runtime, running: tuple[str, int], tmp_path: Path
) -> None:
    cid, _init = running
    process = {
        "user": {"uid": 0, "gid": 0},
        "args": ["/bin/sh", "-c", "echo from-file $X; cat <&3"],
        "env": ["PATH=/bin", "X=42"],
        "cwd": "/",
    }
    (tmp_path / "process.json").write_text(json.dumps(process))
    (tmp_path / "data").write_text("through fd 3\n")
    # fd 3 of gantry-runtime is the data file (a shell opens it there), handed on as 3.
    argv = runtime.argv(
        "exec", "--process", str(tmp_path / "process.json"), "--preserve-fds", "1", cid
    )
    completed = subprocess.run(
        ["/bin/sh", "-c", 'exec 3<"$0"; exec "$@"', str(tmp_path / "data"), *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=rcs.TIMEOUT,
        check=False,
    )
    result = rcs.Result(completed.returncode, completed.stdout, completed.stderr)
    assert result.rc == 0, result
    assert result.out.splitlines() == ["from-file 42", "through fd 3"]
    # A process.json without a process's required fields names the field.
    (tmp_path / "bad.json").write_text(json.dumps({"args": ["x"]}))
    bad = runtime("exec", "--process", str(tmp_path / "bad.json"), cid)
    assert bad.rc == 1 and "process.cwd" in bad.err and "Traceback" not in bad.err, bad


def test_exec_into_a_paused_stopped_or_missing_container_is_refused(
    runtime: rcs.Runtime, tmp_path: Path
) -> None:
    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/sleep", "300"])
    runtime.ok("run", "-d", "-b", str(bundle), "p1")
    runtime.ok("pause", "p1")
    paused = runtime("exec", "p1", "/bin/true")
    assert paused.rc == 1 and "'p1' is paused" in paused.err, paused
    runtime.ok("resume", "p1")
    assert runtime("exec", "p1", "/bin/true").rc == 0
    runtime.ok("kill", "p1", "KILL")
    runtime.exit_record("p1")
    stopped = runtime("exec", "p1", "/bin/true")
    assert stopped.rc == 1 and "'p1' is stopped" in stopped.err, stopped
    runtime.ok("delete", "p1")
    missing = runtime("exec", "p1", "/bin/true")
    assert missing.rc == 1 and "does not exist" in missing.err, missing
    usage = runtime("exec", "p1")
    assert (usage.rc == 1 and "nothing to run" in usage.err) or "does not exist" in usage.err


def test_exec_into_a_user_namespaced_container(runtime: rcs.Runtime, tmp_path: Path) -> None:
    def userns(config: dict[str, Any]) -> None:
        config["linux"]["namespaces"].append({"type": "user"})
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]

    with support.scratch_dir() as scratch:
        scratch.chmod(0o755)  # the container's root is host uid 100000: it must reach its rootfs
        bundle = rcs.busybox_bundle(scratch / "bundle", ["/bin/sleep", "300"], userns)
        _exec_in_userns(runtime, bundle)


def _exec_in_userns(runtime: rcs.Runtime, bundle: Path) -> None:
    runtime.ok("run", "-d", "-b", str(bundle), "u1")
    try:
        init = int(runtime.state("u1")["pid"])
        user_ns = os.readlink(f"/proc/{init}/ns/user")
        result = runtime(
            "exec",
            "u1",
            "/bin/sh",
            "-c",
            "id -u; readlink /proc/self/ns/user; cat /proc/self/uid_map",
        )
    finally:
        runtime.ok("delete", "--force", "u1")
    assert result.rc == 0, result
    lines = result.out.splitlines()
    assert lines[0] == "0"
    assert lines[1] == user_ns != os.readlink("/proc/self/ns/user")
    assert lines[2].split() == ["0", "100000", "65536"]
