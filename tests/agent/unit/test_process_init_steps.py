"""gantry.runtime.init, the parts that run anywhere: the sync channel, sysctl paths, the
executable lookup and the environment, the step wrapper."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from gantry.runtime.init import (
    DEFAULT_PATH,
    InitStepError,
    SyncChannel,
    build_environment,
    find_executable,
    step,
    sysctl_path,
)
from gantry.runtime.rootfs import RootfsError
from gantry.runtime.users import ExecUser


@pytest.fixture
def channels() -> Iterator[tuple[SyncChannel, SyncChannel]]:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a, b = SyncChannel(left), SyncChannel(right)
    yield a, b
    a.close()
    b.close()


def test_channel_carries_one_message_per_datagram(
    channels: tuple[SyncChannel, SyncChannel],
) -> None:
    a, b = channels
    a.send("pid", pid=42)
    a.send("ready")
    assert b.receive() == {"type": "pid", "pid": 42}
    assert b.expect("ready") == {"type": "ready"}


def test_channel_eof_is_none_and_expect_names_sync(
    channels: tuple[SyncChannel, SyncChannel],
) -> None:
    a, b = channels
    a.close()
    assert b.receive() is None
    with pytest.raises(InitStepError) as info:
        b.expect("go")
    assert info.value.step == "sync"


def test_channel_unexpected_message(channels: tuple[SyncChannel, SyncChannel]) -> None:
    a, b = channels
    a.send("start")
    with pytest.raises(InitStepError, match="expected 'go'"):
        b.expect("go")


def test_channel_send_to_a_closed_peer_is_an_error_not_sigpipe(
    channels: tuple[SyncChannel, SyncChannel],
) -> None:
    a, b = channels
    b.close()
    with pytest.raises(OSError) as info:
        a.send("ready")
    assert info.value.errno in (errno.EPIPE, errno.ECONNRESET)


def test_channel_move_to_keeps_it_close_on_exec(
    channels: tuple[SyncChannel, SyncChannel],
) -> None:
    a, b = channels
    target = max(a.fileno(), b.fileno()) + 10
    a.move_to(target)
    assert a.fileno() == target
    assert not os.get_inheritable(target)
    a.send("go")
    assert b.receive() == {"type": "go"}


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("net.ipv4.ip_forward", "net/ipv4/ip_forward"),
        ("kernel.shmmax", "kernel/shmmax"),
        ("net/ipv4/conf/eth0.100/forwarding", "net/ipv4/conf/eth0.100/forwarding"),
    ],
)
def test_sysctl_path(key: str, path: str) -> None:
    assert sysctl_path(key) == path


@pytest.mark.parametrize("key", ["net..ipv4", "net/../../etc", ".net", "net/ipv4/"])
def test_sysctl_path_refuses_odd_names(key: str) -> None:
    with pytest.raises(ValueError, match="not a sysctl name"):
        sysctl_path(key)


@pytest.fixture
def bin_dirs(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "tool").write_text("not executable")
    (first / "dir").mkdir()
    (second / "tool").write_text("#!/bin/sh\n")
    (second / "tool").chmod(0o755)
    (second / "dir").write_text("#!/bin/sh\n")
    (second / "dir").chmod(0o755)
    return first, second


def test_find_executable_searches_path_for_an_executable_file(
    bin_dirs: tuple[Path, Path],
) -> None:
    # "tool" in the first directory has no x bit: even root's access(X_OK) refuses it.
    first, second = bin_dirs
    env = (("PATH", f"{first}:{second}"),)
    assert find_executable("tool", env) == f"{second}/tool"
    assert find_executable("dir", env) == f"{second}/dir"


def test_find_executable_last_path_wins_and_default_path() -> None:
    env = (("PATH", "/nonexistent"), ("PATH", "/bin"))
    assert find_executable("sh", env) == "/bin/sh"
    assert DEFAULT_PATH.endswith(":/bin")
    assert find_executable("sh", ()) in {f"{d}/sh" for d in DEFAULT_PATH.split(":")}


def test_find_executable_not_found() -> None:
    with pytest.raises(FileNotFoundError, match="executable file not found"):
        find_executable("no-such-tool-anywhere", (("PATH", "/nonexistent"),))


def test_find_executable_with_a_slash_is_checked_as_given(bin_dirs: tuple[Path, Path]) -> None:
    first, second = bin_dirs
    assert find_executable(f"{second}/tool", ()) == f"{second}/tool"
    with pytest.raises(FileNotFoundError):
        find_executable(f"{first}/missing", ())
    with pytest.raises(IsADirectoryError):
        find_executable(f"{first}/dir", ())


def test_environment_gets_home_from_the_user_unless_set() -> None:
    user = ExecUser(1000, 1000, (), "/home/app", "app")
    assert build_environment((("A", "1"),), user) == {"A": "1", "HOME": "/home/app"}
    assert build_environment((("HOME", "/x"),), user) == {"HOME": "/x"}
    assert build_environment((("A", "1"), ("A", "2")), user)["A"] == "2"


def test_step_turns_failures_into_named_errors() -> None:
    with pytest.raises(InitStepError) as info, step("cwd"):
        os.chdir("/no/such/dir")
    assert info.value.step == "cwd"
    assert info.value.errno == errno.ENOENT
    assert info.value.message == "No such file or directory: /no/such/dir"

    with pytest.raises(InitStepError) as info, step("rootfs"):
        raise RootfsError("pivot_root", "/x", "Invalid argument", errno.EINVAL)
    assert (info.value.step, info.value.errno) == ("rootfs", errno.EINVAL)
    assert info.value.message == "rootfs: pivot_root: /x: Invalid argument"

    with pytest.raises(InitStepError) as info, step("user"):
        raise LookupError("unable to find user 'x'")
    assert (info.value.step, info.value.errno) == ("user", None)


def test_step_keeps_an_inner_step_name() -> None:
    with pytest.raises(InitStepError) as info, step("outer"), step("inner"):
        raise ValueError("boom")
    assert info.value.step == "inner"
