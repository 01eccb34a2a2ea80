"""Small pure pieces of gantry.linux.fs and gantry.linux.seccomp (no kernel calls)."""

from __future__ import annotations

import ctypes
import stat

import pytest
from gantry.linux import fs, seccomp


def test_proc_fd_path() -> None:
    assert fs.proc_fd_path(7) == "/proc/thread-self/fd/7"


def test_open_how_layout() -> None:
    assert ctypes.sizeof(fs.OpenHow) == 24
    assert fs.RESOLVE_IN_ROOT == 0x10
    assert fs.RESOLVE_NO_MAGICLINKS == 0x02


def test_device_types_and_numbers() -> None:
    assert fs.DEVICE_TYPES["c"] == fs.DEVICE_TYPES["u"] == stat.S_IFCHR
    assert fs.DEVICE_TYPES["b"] == stat.S_IFBLK
    assert fs.DEVICE_TYPES["p"] == stat.S_IFIFO
    assert fs.device_numbers(fs.makedev(136, 3)) == (136, 3)
    assert fs.device_numbers(fs.makedev(4095, 1048575)) == (4095, 1048575)


def test_mknod_rejects_an_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown device type 'x'"):
        fs.mknod("/nonexistent/x", "x")


def test_bpf_helpers() -> None:
    ret = seccomp.stmt(seccomp.BPF_RET | seccomp.BPF_K, seccomp.SECCOMP_RET_ALLOW)
    assert ret == seccomp.SockFilter(0x06, 0, 0, 0x7FFF0000)
    jeq = seccomp.jump(seccomp.BPF_JMP | seccomp.BPF_JEQ | seccomp.BPF_K, 63, 1, 0)
    assert jeq == seccomp.SockFilter(0x15, 1, 0, 63)


@pytest.mark.parametrize("size", [0, seccomp.BPF_MAXINSNS + 1])
def test_load_filter_checks_the_program_size_first(size: int) -> None:
    insn = seccomp.stmt(seccomp.BPF_RET | seccomp.BPF_K, seccomp.SECCOMP_RET_ALLOW)
    with pytest.raises(ValueError, match="instructions"):
        seccomp.load_filter([insn] * size)
