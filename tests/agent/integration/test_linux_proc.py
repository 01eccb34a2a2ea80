"""gantry.linux.proc against the real kernel: stat, status, mountinfo, pidfds, close_range."""

from __future__ import annotations

import errno
import os
import select
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import linux_support as support
import pytest
from gantry.linux import mount, ns, prctl, proc

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


@pytest.fixture(autouse=True)
def _host_unchanged() -> Iterator[None]:
    with support.host_unchanged():
        yield


def _boot_ticks_now() -> float:
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime * os.sysconf("SC_CLK_TCK")


def test_start_time_of_a_live_pid() -> None:
    mine = proc.start_time(os.getpid())
    assert 0 < mine <= _boot_ticks_now() + 1
    assert proc.start_time("self") == mine
    with support.holder() as held:
        theirs = proc.start_time(held.pid)
        stat = proc.read_stat(held.pid)
    assert theirs >= mine
    assert stat.pid == held.pid
    assert stat.ppid == os.getpid()
    assert stat.state in {"S", "R"}


def test_read_stat_of_a_reaped_pid_is_process_lookup_error() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    with pytest.raises(ProcessLookupError):
        proc.read_stat(pid)


def test_stat_of_a_process_whose_name_holds_spaces_and_parens() -> None:
    with support.holder(lambda: prctl.set_name(") (x y) ")) as held:
        stat = proc.read_stat(held.pid)
    assert stat.comm == ") (x y) "
    assert stat.ppid == os.getpid()


def test_status_of_self() -> None:
    status = proc.read_status()
    assert status.pid == status.tgid == os.getpid()
    assert status.ppid == os.getppid()
    assert status.uids[:2] == (os.getuid(), os.geteuid())
    assert status.no_new_privs is False
    assert status.cap_eff  # root


def test_mountinfo_unescapes_a_mount_point_with_spaces() -> None:
    with support.scratch_dir() as scratch:
        target = scratch / "with space\tand tab"
        target.mkdir()

        def child() -> list[object]:
            ns.unshare(ns.CLONE_NEWNS)
            mount.make_rprivate("/")
            mount.mount("gantry test", target, "tmpfs", 0, "size=64k")
            entry = proc.find_mount(proc.read_mountinfo(), str(target))
            assert entry is not None
            return [entry.mount_point, entry.source, entry.fstype, entry.propagation]

        assert support.run_in_child(child) == [str(target), "gantry test", "tmpfs", "private"]


def test_mountinfo_of_self_has_a_root_mount() -> None:
    table = proc.read_mountinfo()
    root = proc.find_mount(table, "/")
    assert root is not None
    assert {entry.mount_id for entry in table} >= {root.mount_id}
    assert proc.read_mountinfo(os.getpid()) == table


def test_pidfd_send_signal_kills_a_child() -> None:
    with support.holder() as held:
        pidfd = proc.pidfd_open(held.pid)
        try:
            proc.pidfd_send_signal(pidfd, signal.SIGKILL)
            # A pidfd polls readable once the process has exited.
            readable, _writable, _exceptional = select.select([pidfd], [], [], 10)
            _pid, status = os.waitpid(held.pid, 0)
            with pytest.raises(ProcessLookupError) as caught:
                proc.pidfd_send_signal(pidfd, signal.SIGTERM)
        finally:
            os.close(pidfd)
    assert readable == [pidfd]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert "pidfd_send_signal" in str(caught.value)


def test_pidfd_getfd_duplicates_a_descriptor_of_another_process() -> None:
    with support.scratch_dir() as scratch:
        marker = scratch / "marker"
        marker.write_text("held")

        def setup() -> None:
            fd = os.open(marker, os.O_RDONLY)
            os.dup2(fd, 200)

        with support.holder(setup) as held:
            pidfd = proc.pidfd_open(held.pid)
            try:
                fd = proc.pidfd_getfd(pidfd, 200)
            finally:
                os.close(pidfd)
            try:
                assert os.pread(fd, 10, 0) == b"held"
                assert not os.get_inheritable(fd)
            finally:
                os.close(fd)


def _dup_high(count: int, base: int) -> list[int]:
    fd = os.open("/dev/null", os.O_RDONLY)
    high = [os.dup2(fd, base + n) for n in range(count)]
    os.close(fd)
    return high


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        assert exc.errno == errno.EBADF
        return False
    return True


@pytest.mark.parametrize("closer", [proc.close_range, proc.close_range_fallback])
def test_close_range_closes_and_marks_cloexec(closer: Callable[..., None]) -> None:
    def child() -> dict[str, object]:
        low = _dup_high(2, 100)
        high = _dup_high(3, 200)
        closer(200)
        closed = [_is_open(fd) for fd in high]
        closer(100, 150, cloexec=True)
        return {
            "closed": closed,
            "low_open": [_is_open(fd) for fd in low],
            "low_inheritable": [os.get_inheritable(fd) for fd in low],
            "listed": [fd for fd in proc.open_fds() if fd >= 100],
        }

    seen = support.run_in_child(child)
    assert seen == {
        "closed": [False, False, False],
        "low_open": [True, True],
        "low_inheritable": [False, False],
        "listed": [100, 101],
    }


def test_close_from() -> None:
    def child() -> list[bool]:
        fds = _dup_high(2, 300)
        proc.close_from(300)
        return [_is_open(fd) for fd in fds]

    assert support.run_in_child(child) == [False, False]


def test_holder_start_time_is_after_ours_in_real_time() -> None:
    before = _boot_ticks_now()
    time.sleep(0.05)
    with support.holder() as held:
        assert proc.start_time(held.pid) >= int(before)
