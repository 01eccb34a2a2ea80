"""gantry.linux.seccomp against the real kernel; the filter goes on a forked child only."""

from __future__ import annotations

import errno
import os
import platform
from collections.abc import Iterator

import linux_support as support
import pytest
from gantry.linux import _libc, prctl, seccomp
from gantry.linux.proc import read_status
from gantry.linux.seccomp import (
    BPF_ABS,
    BPF_JEQ,
    BPF_JMP,
    BPF_K,
    BPF_LD,
    BPF_RET,
    BPF_W,
    SockFilter,
    jump,
    stmt,
)

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

NR_UNAME = {"x86_64": 63, "aarch64": 160}


@pytest.fixture(autouse=True)
def _host_unchanged() -> Iterator[None]:
    with support.host_unchanged():
        yield


def _deny_uname() -> list[SockFilter]:
    return [
        stmt(BPF_LD | BPF_W | BPF_ABS, seccomp.SECCOMP_DATA_ARCH),
        jump(BPF_JMP | BPF_JEQ | BPF_K, seccomp.audit_arch(), 1, 0),
        stmt(BPF_RET | BPF_K, seccomp.SECCOMP_RET_ALLOW),
        stmt(BPF_LD | BPF_W | BPF_ABS, seccomp.SECCOMP_DATA_NR),
        jump(BPF_JMP | BPF_JEQ | BPF_K, NR_UNAME[platform.machine()], 0, 1),
        stmt(BPF_RET | BPF_K, seccomp.SECCOMP_RET_ERRNO | errno.EPERM),
        stmt(BPF_RET | BPF_K, seccomp.SECCOMP_RET_ALLOW),
    ]


@pytest.mark.skipif(platform.machine() not in NR_UNAME, reason="syscall number unknown")
def test_load_filter_denies_uname_in_the_child_only() -> None:
    def child() -> list[object]:
        prctl.set_no_new_privs()
        assert seccomp.load_filter(_deny_uname()) == 0
        try:
            os.uname()
            denied: object = None
        except OSError as exc:
            denied = exc.errno
        status = read_status()
        return [denied, status.seccomp, status.seccomp_filters, prctl.get_seccomp_mode()]

    denied, mode, filters, prctl_mode = support.run_in_child(child)
    assert denied == errno.EPERM
    assert mode == prctl_mode == 2
    assert filters in (1, None)
    assert os.uname().sysname == "Linux"


@pytest.mark.skipif(platform.machine() not in NR_UNAME, reason="syscall number unknown")
def test_load_filter_falls_back_to_prctl_without_seccomp_syscall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_syscall = _libc.syscall

    def no_seccomp(name: str, *args: object, **kwargs: object) -> int:
        if name == "seccomp":
            raise OSError(errno.ENOSYS, "seccomp: Function not implemented")
        return real_syscall(name, *args, **kwargs)

    monkeypatch.setattr(seccomp, "syscall", no_seccomp)

    def child() -> list[object]:
        prctl.set_no_new_privs()
        seccomp.load_filter(_deny_uname())
        try:
            os.uname()
        except OSError as exc:
            return [exc.errno, prctl.get_seccomp_mode()]
        return [None, prctl.get_seccomp_mode()]

    assert support.run_in_child(child) == [errno.EPERM, 2]


def test_action_available() -> None:
    assert seccomp.action_available(seccomp.SECCOMP_RET_ALLOW)
    assert seccomp.action_available(seccomp.SECCOMP_RET_LOG)
    assert not seccomp.action_available(0x12340000)
