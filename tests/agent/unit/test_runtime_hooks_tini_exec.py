"""Pure parts of hooks, the tini init, exec's process and the terminal flag checks (no
root needed: hooks here are real /bin/sh scripts run as the test's user)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from gantry.cli import runtime_exec as rx
from gantry.runtime import console, hooks, tini
from gantry.runtime import exec as rexec
from gantry.runtime.defaults import default_config
from gantry.runtime.spec import Hook, Spec, load_spec


def _spec(change: Any = None) -> Spec:
    config = default_config(["/bin/app", "--flag"], "rootfs")
    if change is not None:
        change(config)
    return load_spec(config)


# --- tini -------------------------------------------------------------------------------------


def test_no_annotation_means_no_init() -> None:
    spec = _spec()
    assert tini.init_binary(spec) is None
    assert tini.with_init(spec) is spec


@pytest.mark.parametrize("value", ["false", "", "0", "no"])
def test_false_values_mean_no_init(value: str) -> None:
    spec = _spec(lambda c: c.update(annotations={tini.ANNOTATION: value}))
    assert tini.with_init(spec) is spec


def test_an_init_wraps_the_process_and_binds_the_binary_read_only(tmp_path: Path) -> None:
    binary = tmp_path / "my-init"
    binary.write_bytes(b"\x7fELF")
    binary.chmod(0o755)
    spec = _spec(lambda c: c.update(annotations={tini.ANNOTATION: str(binary)}))
    wrapped = tini.with_init(spec)
    assert wrapped.process is not None
    assert wrapped.process.args == ("/dev/init", "--", "/bin/app", "--flag")
    mount = wrapped.mounts[-1]
    assert (mount.destination, mount.type, mount.source) == ("/dev/init", "bind", str(binary))
    assert "ro" in mount.options
    assert wrapped.mounts[:-1] == spec.mounts  # added last: onto the runtime's /dev tmpfs


def test_an_init_is_refused_over_a_bound_dev(tmp_path: Path) -> None:
    binary = tmp_path / "my-init"
    binary.write_bytes(b"\x7fELF")
    binary.chmod(0o755)

    def change(config: dict[str, Any]) -> None:
        config["annotations"] = {tini.ANNOTATION: str(binary)}
        config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/dev"]
        config["mounts"].insert(0, {"destination": "/dev", "type": "bind", "source": "/dev"})

    with pytest.raises(tini.InitBinaryError, match="bind mount"):
        tini.with_init(_spec(change))


@pytest.mark.skipif(not Path(tini.DEFAULT_INIT).exists(), reason="needs Debian's tini")
def test_true_means_debians_static_tini() -> None:
    spec = _spec(lambda c: c.update(annotations={tini.ANNOTATION: "true"}))
    assert tini.init_binary(spec) == tini.DEFAULT_INIT


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("sometimes", "neither"), ("relative/tini", "neither"), ("/no/such/init", "/no/such/init")],
)
def test_bad_init_values_name_the_annotation(value: str, fragment: str) -> None:
    spec = _spec(lambda c: c.update(annotations={tini.ANNOTATION: value}))
    with pytest.raises(tini.InitBinaryError, match=fragment) as info:
        tini.with_init(spec)
    assert "annotations['org.gantry.init']" in str(info.value)


# --- hooks ------------------------------------------------------------------------------------


def test_hook_state_and_kinds() -> None:
    spec = _spec(
        lambda c: c.update(
            annotations={"a": "b"},
            hooks={"createRuntime": [{"path": "/x"}], "poststop": [{"path": "/y"}]},
        )
    )
    state = hooks.hook_state(spec, "c1", status="creating", pid=42, bundle="/b")
    assert state == {
        "ociVersion": spec.oci_version,
        "id": "c1",
        "status": "creating",
        "pid": 42,
        "bundle": "/b",
        "annotations": {"a": "b"},
    }
    assert [h.path for h in hooks.hooks_of(spec.hooks, "createRuntime")] == ["/x"]
    assert hooks.hooks_of(spec.hooks, "prestart") == ()
    assert hooks.hooks_of(None, "poststop") == ()
    assert [hooks.state_status_for(kind) for kind in hooks.HOOK_KINDS] == [
        "creating",
        "creating",
        "creating",
        "created",
        "running",
        "stopped",
    ]


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_a_hook_gets_the_state_args_and_only_its_env(tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = _script(tmp_path, "h.sh", f'{{ echo "$1|$2|$K|$HOME"; cat; }} > {out}')
    os.environ["HOME"] = os.environ.get("HOME", "/root")  # must not leak into the hook
    # args[0] is the program's argv[0] (a script sees its path as $0 instead).
    hook = Hook(path=path, args=("named", "one", "two"), env=("K=v",))
    hooks.run_hooks([hook], "createRuntime", {"id": "c1"})
    first, _sep, rest = out.read_text().partition("\n")
    assert first == "one|two|v|"
    assert json.loads(rest) == {"id": "c1"}


def test_the_first_failing_hook_stops_the_rest(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    fail = _script(tmp_path, "f.sh", "echo to-stdout; echo to-stderr >&2; exit 9")
    after = _script(tmp_path, "a.sh", f"touch {marker}")
    with pytest.raises(hooks.HookError) as info:
        hooks.run_hooks([Hook(path=fail), Hook(path=after)], "prestart", {})
    text = str(info.value)
    assert text.startswith("hooks.prestart[0]: ")
    assert "exit status 9" in text and "to-stdout" in text and "to-stderr" in text
    assert not marker.exists()


def test_warning_hooks_run_on_after_a_failure(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    fail = _script(tmp_path, "f.sh", "exit 1")
    after = _script(tmp_path, "a.sh", f"touch {marker}")
    warnings = hooks.run_hooks_warning([Hook(path=fail), Hook(path=after)], "poststop", {})
    assert len(warnings) == 1 and warnings[0].startswith("hooks.poststop[0]")
    assert marker.exists()


def test_a_missing_hook_and_a_timeout_are_named(tmp_path: Path) -> None:
    with pytest.raises(hooks.HookError, match=r"hooks.createContainer\[0\]: /no/such/hook"):
        hooks.run_hooks([Hook(path="/no/such/hook")], "createContainer", {})
    slow = _script(tmp_path, "s.sh", "exec sleep 60")
    with pytest.raises(hooks.HookError, match="timeout of 1s"):
        hooks.run_hooks([Hook(path=slow, timeout=1)], "prestart", {})


# --- exec's process ---------------------------------------------------------------------------


def test_exec_spec_overrides_like_runc() -> None:
    base = _spec().process
    assert base is not None
    process = rexec.exec_spec(
        base,
        args=["/bin/sh"],
        env=["A=1"],
        cwd="/tmp",
        user="1000:1001",
        additional_gids=[5],
        add_caps=["net_admin"],
        no_new_privs=True,
        terminal=True,
    )
    assert process.args == ("/bin/sh",)
    assert process.env == (*base.env, "A=1")
    assert process.cwd == "/tmp" and process.terminal
    assert (process.user.uid, process.user.gid, process.user.additional_gids) == (1000, 1001, (5,))
    assert process.capabilities is not None and base.capabilities is not None
    for which in ("bounding", "effective", "permitted"):
        assert getattr(process.capabilities, which) == (
            *getattr(base.capabilities, which),
            "CAP_NET_ADMIN",
        )
    assert process.capabilities.ambient == ()  # no inheritable set: runc adds no ambient
    assert process.no_new_privileges
    assert rexec.exec_spec(base).args == base.args  # nothing given: the container's own


def test_exec_spec_names_a_bad_value() -> None:
    base = _spec().process
    assert base is not None
    with pytest.raises(rexec.ExecError, match=r"process\.cwd"):
        rexec.exec_spec(base, cwd="relative")
    with pytest.raises(rexec.ExecError, match=r"process\.capabilities"):
        rexec.exec_spec(base, add_caps=["CAP_NO_SUCH"])
    named = rexec.exec_spec(base, user="www-data")
    assert named.user.username == "www-data"


def test_a_process_file_is_validated(tmp_path: Path) -> None:
    good = tmp_path / "p.json"
    good.write_text(json.dumps({"user": {"uid": 0, "gid": 0}, "args": ["x"], "cwd": "/"}))
    assert rexec.load_process_file(good).args == ("x",)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"user": {"uid": 0, "gid": 0}, "args": [], "cwd": "/"}))
    with pytest.raises(rexec.ExecError, match=r"process\.args"):
        rexec.load_process_file(bad)
    with pytest.raises(rexec.ExecError, match="not valid JSON"):
        (tmp_path / "junk.json").write_text("{")
        rexec.load_process_file(tmp_path / "junk.json")
    with pytest.raises(rexec.ExecError, match=r"missing\.json"):
        rexec.load_process_file(tmp_path / "missing.json")


def test_plan_exec_uses_the_containers_seccomp_and_its_process() -> None:
    from gantry.runtime.defaults import DEFAULT_CAPABILITIES
    from gantry.runtime.process import HostFacts
    from gantry.runtime.seccomp_default import default_seccomp_config

    spec = _spec(lambda c: c["linux"].update(seccomp=default_seccomp_config(DEFAULT_CAPABILITIES)))
    assert spec.process is not None
    process = dataclasses.replace(spec.process, args=("/bin/other",), terminal=True)
    host = HostFacts(last_cap=40, held_caps=frozenset(range(41)), may_set_groups=True)
    plan = rexec.plan_exec(spec, process, Path("/b"), host)
    assert plan.args == ("/bin/other",) and plan.terminal
    assert plan.seccomp and plan.no_new_privs and not plan.seccomp_early
    assert plan.join == () and plan.unshare_flags == 0 and not plan.create_hooks


# --- terminal flags ---------------------------------------------------------------------------


def test_terminal_flag_checks_follow_runc(tmp_path: Path) -> None:
    with pytest.raises(rx.TerminalUsageError, match="--console-socket"):
        rx.plan_terminal(True, None, detach=True)
    with pytest.raises(rx.TerminalUsageError, match="only for a detached"):
        rx.plan_terminal(False, "/x", detach=True)
    with pytest.raises(rx.TerminalUsageError, match="only for a detached"):
        rx.plan_terminal(True, "/x", detach=False)
    assert rx.plan_terminal(False, None, detach=True) == rx.TerminalPlan()
    with pytest.raises(console.ConsoleError, match=str(tmp_path / "none")):
        rx.plan_terminal(True, str(tmp_path / "none"), detach=True)


def test_the_console_socket_carries_the_master_and_the_payload() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    read_end, write_end = os.pipe()
    try:
        console.send_console(theirs, write_end, "c9")
        received = console.receive_console(ours, timeout=5)
        os.write(received, b"through")  # the same pipe, another fd
        os.close(received)
        assert os.read(read_end, 16) == b"through"
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        ours.close()
        theirs.close()


def test_a_console_socket_closed_without_a_terminal_is_an_error() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.close()
    with pytest.raises(console.ConsoleError, match="without a terminal"):
        console.receive_console(ours, timeout=5)
    ours.close()


def test_the_terminal_proxy_copies_both_ways_until_the_other_side_is_gone() -> None:
    import threading

    master, slave = os.openpty()
    host_master, host_tty = os.openpty()  # stands in for the user's terminal
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    console.set_window_size(host_tty, console.WindowSize(24, 91))
    proxy = console.TerminalProxy(master, host_tty, stdin=stdin_r, stdout=stdout_w)
    done = threading.Event()

    def run() -> None:
        proxy.run()
        done.set()

    try:
        with proxy.active():
            assert console.window_size(slave) == console.WindowSize(24, 91)
            thread = threading.Thread(target=run)
            thread.start()
            os.write(stdin_w, b"typed\n")
            assert b"typed" in _read_until(slave, b"typed")
            os.write(slave, b"printed")
            # the slave echoes what was typed (cooked mode), so "printed" may come second
            assert b"printed" in _read_until(stdout_r, b"printed")
            os.close(slave)  # the container's side is gone: EIO on the master
            thread.join(10)
            assert done.is_set()
    finally:
        for fd in (master, host_master, host_tty, stdin_r, stdin_w, stdout_r, stdout_w):
            os.close(fd)


def _read_until(fd: int, wanted: bytes) -> bytes:
    seen = b""
    while wanted not in seen:
        chunk = _read_some(fd)
        if not chunk:
            break
        seen += chunk
    return seen


def _read_some(fd: int) -> bytes:
    import select

    ready, _w, _x = select.select([fd], [], [], 10)
    assert ready
    return os.read(fd, 1024)
