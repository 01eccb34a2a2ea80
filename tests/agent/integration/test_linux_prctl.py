"""gantry.linux.prctl against the real kernel; every change happens in a forked child."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Iterator

import linux_support as support
import pytest
from gantry.linux import prctl
from gantry.linux.caps import cap_number
from gantry.linux.proc import read_stat, read_status

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


@pytest.fixture(autouse=True)
def _host_unchanged() -> Iterator[None]:
    with support.host_unchanged():
        yield


def test_no_new_privs_shows_in_proc_status() -> None:
    def child() -> list[bool]:
        before = prctl.get_no_new_privs()
        prctl.set_no_new_privs()
        return [before, prctl.get_no_new_privs(), read_status().no_new_privs]

    assert support.run_in_child(child) == [False, True, True]
    assert read_status().raw["NoNewPrivs"] == "0"


def test_dumpable_round_trip() -> None:
    def child() -> list[bool]:
        prctl.set_dumpable(False)
        off = prctl.get_dumpable()
        prctl.set_dumpable(True)
        return [off, prctl.get_dumpable()]

    assert support.run_in_child(child) == [False, True]


def test_child_subreaper_adopts_orphans() -> None:
    def child() -> list[object]:
        prctl.set_child_subreaper(True)
        me = os.getpid()
        read_fd, write_fd = os.pipe()
        middle = os.fork()
        if middle == 0:
            if os.fork() == 0:  # the orphan-to-be
                deadline = time.monotonic() + 10
                while os.getppid() != me and time.monotonic() < deadline:
                    time.sleep(0.01)
                os.write(write_fd, str(os.getppid()).encode())
                os._exit(0)
            os._exit(0)
        os.close(write_fd)
        os.waitpid(middle, 0)
        adopted_by = int(os.read(read_fd, 32))
        os.close(read_fd)
        os.waitpid(-1, 0)  # reap the adopted orphan
        return [prctl.get_child_subreaper(), adopted_by == me]

    assert support.run_in_child(child) == [True, True]


def test_pdeathsig_round_trip() -> None:
    def child() -> list[int]:
        before = prctl.get_pdeathsig()
        prctl.set_pdeathsig(signal.SIGTERM)
        return [before, prctl.get_pdeathsig()]

    assert support.run_in_child(child) == [0, signal.SIGTERM]


def test_set_name_with_spaces_and_parens_shows_in_comm_and_stat() -> None:
    def child() -> list[str]:
        prctl.set_name("a) (b c")
        with open("/proc/thread-self/comm") as comm:
            return [prctl.get_name(), comm.read().rstrip("\n"), read_stat().comm]

    assert support.run_in_child(child) == ["a) (b c"] * 3


def test_set_name_is_cut_to_fifteen_bytes() -> None:
    def child() -> str:
        prctl.set_name("gantry-a-very-long-name")
        return prctl.get_name()

    assert support.run_in_child(child) == "gantry-a-very-l"


def test_keepcaps_securebits_and_seccomp_mode() -> None:
    def child() -> list[object]:
        prctl.set_keepcaps(True)
        return [prctl.get_keepcaps(), prctl.get_securebits(), prctl.get_seccomp_mode()]

    keep, bits, mode = support.run_in_child(child)
    assert keep is True
    assert bits & 0x10  # SECBIT_KEEP_CAPS mirrors the flag
    assert mode == 0


def test_capbset_read_and_unknown_cap() -> None:
    assert prctl.capbset_read(cap_number("CAP_CHOWN"))
    with pytest.raises(OSError) as caught:
        prctl.capbset_read(1000)
    assert caught.value.errno == errno.EINVAL
    assert "prctl(PR_CAPBSET_READ)" in str(caught.value)
