"""Terminals through gantry-runtime on the real kernel: a bundle exactly as `runc spec`
writes it (terminal: true, args ["sh"]) run with a real console socket receiver, and
`run` in the foreground proxying a pty it was started on."""

from __future__ import annotations

import json
import os
import pty
from collections.abc import Iterator
from pathlib import Path

import linux_support as support
import pytest
import rootfs_support as rs
import runtime_cli_support as rcs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    with support.host_unchanged():
        yield


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[rcs.Runtime]:
    with rcs.runtime_in(tmp_path) as rt:
        yield rt


@pytest.mark.skipif(not Path("/usr/sbin/runc").exists(), reason="needs runc for `runc spec`")
def test_a_runc_spec_bundle_runs_unchanged_with_a_console_socket(
    runtime: rcs.Runtime, tmp_path: Path
) -> None:
    bundle = rcs.runc_spec_bundle(tmp_path / "bundle")
    config_before = (bundle / "config.json").read_bytes()
    assert json.loads(config_before)["process"]["terminal"] is True
    receiver = rcs.ConsoleReceiver(tmp_path / "console.sock")
    try:
        result = runtime(
            "run", "-d", "--console-socket", str(receiver.path), "-b", str(bundle), "rs1"
        )
        assert result.rc == 0, result
        master = receiver.receive()
    finally:
        receiver.close()
    try:
        assert json.loads(receiver.payload) == {"type": "terminal", "container": "rs1"}
        assert runtime.state("rs1")["status"] == "running"
        os.write(master, b"tty; echo hi; exit 3\n")
        lines = rcs.terminal_lines(rcs.read_terminal(master))
    finally:
        os.close(master)
    assert "hi" in lines, lines  # the shell's output, not only the echoed command line
    assert "/dev/pts/0" in lines, lines
    assert runtime.exit_record("rs1")["exit_code"] == 3
    assert runtime.state("rs1")["status"] == "stopped"
    runtime.ok("delete", "rs1")
    assert (bundle / "config.json").read_bytes() == config_before


def test_create_with_a_console_socket_then_start(runtime: rcs.Runtime, tmp_path: Path) -> None:
    def terminal(config: dict[str, object]) -> None:
        process = config["process"]
        assert isinstance(process, dict)
        process["terminal"] = True
        process["consoleSize"] = {"height": 40, "width": 132}

    bundle = rcs.busybox_bundle(
        tmp_path / "bundle",
        ["/bin/sh", "-c", "read line; echo got:$line; stty size; ls -l /dev/console"],
        terminal,
    )
    receiver = rcs.ConsoleReceiver(tmp_path / "console.sock")
    try:
        runtime.ok("create", "--console-socket", str(receiver.path), "-b", str(bundle), "cs1")
        master = receiver.receive()
    finally:
        receiver.close()
    try:
        assert runtime.state("cs1")["status"] == "created"
        runtime.ok("start", "cs1")
        os.write(master, b"hello\n")
        lines = rcs.terminal_lines(rcs.read_terminal(master))
    finally:
        os.close(master)
    assert "got:hello" in lines, lines
    assert "40 132" in lines, lines
    console = [line for line in lines if line.endswith("/dev/console")]
    assert console and console[0].startswith("c") and "136," in console[0], lines
    assert runtime.exit_record("cs1")["exit_code"] == 0
    runtime.ok("delete", "cs1")


@pytest.mark.skipif(not Path("/usr/sbin/runc").exists(), reason="needs runc for `runc spec`")
def test_run_in_the_foreground_proxies_its_own_terminal(
    runtime: rcs.Runtime, tmp_path: Path
) -> None:
    bundle = rcs.runc_spec_bundle(tmp_path / "bundle")
    pid, master = pty.fork()
    if pid == 0:  # the child: gantry-runtime on the pty's slave, as on a user's terminal
        try:
            os.execv(rcs.RUNTIME, runtime.argv("run", "-b", str(bundle), "fg1"))
        finally:
            os._exit(127)
    try:
        rcs.read_terminal(master, until=b"# ")  # the shell's prompt: the proxy runs
        os.write(master, b"tty; echo hi; exit 3\n")
        lines = rcs.terminal_lines(rcs.read_terminal(master))
    finally:
        os.close(master)
        _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3, lines
    assert "hi" in lines and "/dev/pts/0" in lines, lines
    assert not (runtime.root / "fg1").exists()  # run deletes what it ran


def test_run_in_the_foreground_without_a_terminal_fails_clearly(
    runtime: rcs.Runtime, tmp_path: Path
) -> None:
    def terminal(config: dict[str, object]) -> None:
        process = config["process"]
        assert isinstance(process, dict)
        process["terminal"] = True

    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/true"], terminal)
    # A new session: no controlling terminal to fall back on, stdio all files.
    result = runtime("run", "-b", str(bundle), "nt1", start_new_session=True)
    assert result.rc == 1, result
    assert result.err.startswith("gantry-runtime: run: process.terminal is true"), result
    assert "/dev/tty" in result.err and "Traceback" not in result.err
    assert not runtime.root.exists() or list(runtime.root.iterdir()) == []


def test_exec_with_a_tty_in_the_foreground(runtime: rcs.Runtime, tmp_path: Path) -> None:
    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/sleep", "300"])
    runtime.ok("run", "-d", "-b", str(bundle), "et1")
    pid, master = pty.fork()
    if pid == 0:
        try:
            script = "tty; stat -L -c owner=%u /proc/self/fd/0; exit 5"
            argv = runtime.argv("exec", "-t", "-u", "1000:1000", "et1", "/bin/sh", "-c", script)
            os.execv(rcs.RUNTIME, argv)
        finally:
            os._exit(127)
    try:
        lines = rcs.terminal_lines(rcs.read_terminal(master))
    finally:
        os.close(master)
        _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 5, lines
    ttys = [line for line in lines if line.startswith("/dev/pts/")]
    assert ttys, lines
    assert "owner=1000" in lines, lines  # the user's own terminal (runc's fixStdioPermissions)
    runtime.ok("delete", "-f", "et1")


def test_exec_detached_with_a_tty_sends_it_to_the_console_socket(
    runtime: rcs.Runtime, tmp_path: Path
) -> None:
    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/sleep", "300"])
    runtime.ok("run", "-d", "-b", str(bundle), "ed1")
    refused = runtime("exec", "-d", "-t", "ed1", "/bin/true")
    assert refused.rc == 1 and "--console-socket" in refused.err, refused
    receiver = rcs.ConsoleReceiver(tmp_path / "console.sock")
    try:
        result = runtime(
            "exec", "-d", "-t", "--console-socket", str(receiver.path), "ed1", "/bin/sh"
        )
        assert result.rc == 0, result
        master = receiver.receive()
    finally:
        receiver.close()
    try:
        os.write(master, b"echo $((6*7)); exit\n")
        lines = rcs.terminal_lines(rcs.read_terminal(master))
    finally:
        os.close(master)
    assert "42" in lines, lines
    runtime.ok("delete", "-f", "ed1")
