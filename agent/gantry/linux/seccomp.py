"""Loading a seccomp BPF program (seccomp(2), with the prctl fallback). No profiles here.

The program is given ready-made as classic BPF instructions; building one from a profile
is the runtime's job.
"""

from __future__ import annotations

import ctypes
import errno
import platform
from collections.abc import Sequence
from typing import Final, NamedTuple

from gantry.linux import prctl
from gantry.linux._libc import syscall

SECCOMP_MODE_FILTER: Final = 2
SECCOMP_SET_MODE_FILTER: Final = 1
SECCOMP_GET_ACTION_AVAIL: Final = 2
SECCOMP_GET_NOTIF_SIZES: Final = 3

SECCOMP_FILTER_FLAG_TSYNC: Final = 0x1
SECCOMP_FILTER_FLAG_LOG: Final = 0x2
SECCOMP_FILTER_FLAG_SPEC_ALLOW: Final = 0x4
SECCOMP_FILTER_FLAG_NEW_LISTENER: Final = 0x8
SECCOMP_FILTER_FLAG_TSYNC_ESRCH: Final = 0x10
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: Final = 0x20

SECCOMP_RET_KILL_PROCESS: Final = 0x80000000
SECCOMP_RET_KILL_THREAD: Final = 0x00000000
SECCOMP_RET_TRAP: Final = 0x00030000
SECCOMP_RET_ERRNO: Final = 0x00050000
SECCOMP_RET_USER_NOTIF: Final = 0x7FC00000
SECCOMP_RET_TRACE: Final = 0x7FF00000
SECCOMP_RET_LOG: Final = 0x7FFC0000
SECCOMP_RET_ALLOW: Final = 0x7FFF0000
SECCOMP_RET_DATA: Final = 0x0000FFFF

# Offsets into struct seccomp_data.
SECCOMP_DATA_NR: Final = 0
SECCOMP_DATA_ARCH: Final = 4
SECCOMP_DATA_IP: Final = 8
SECCOMP_DATA_ARGS: Final = 16

AUDIT_ARCH_X86_64: Final = 0xC000003E
AUDIT_ARCH_I386: Final = 0x40000003
AUDIT_ARCH_AARCH64: Final = 0xC00000B7
AUDIT_ARCH_ARM: Final = 0x40000028

# Classic BPF opcode parts (linux/bpf_common.h).
BPF_LD: Final = 0x00
BPF_JMP: Final = 0x05
BPF_RET: Final = 0x06
BPF_W: Final = 0x00
BPF_ABS: Final = 0x20
BPF_JEQ: Final = 0x10
BPF_JGT: Final = 0x20
BPF_JGE: Final = 0x30
BPF_JSET: Final = 0x40
BPF_K: Final = 0x00

BPF_MAXINSNS: Final = 4096
"""The kernel's limit on instructions in one classic BPF program."""


class SockFilter(NamedTuple):
    """One classic BPF instruction (``struct sock_filter``)."""

    code: int
    jt: int
    jf: int
    k: int


def stmt(code: int, k: int) -> SockFilter:
    """A BPF statement (no jump)."""
    return SockFilter(code, 0, 0, k)


def jump(code: int, k: int, jt: int, jf: int) -> SockFilter:
    """A BPF conditional jump: skip ``jt`` instructions when true, ``jf`` when false."""
    return SockFilter(code, jt, jf, k)


class _CSockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _CSockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_CSockFilter)))


def audit_arch() -> int:
    """Return the ``AUDIT_ARCH_*`` value a filter sees for native syscalls on this machine."""
    machine = platform.machine()
    arches = {"x86_64": AUDIT_ARCH_X86_64, "aarch64": AUDIT_ARCH_AARCH64}
    if machine not in arches:
        raise OSError(errno.ENOSYS, f"seccomp: no audit arch known for {machine}")
    return arches[machine]


def load_filter(program: Sequence[SockFilter], flags: int = 0) -> int:
    """Attach ``program`` to the calling thread (and with ``TSYNC`` all threads).

    Needs no_new_privs or CAP_SYS_ADMIN. Returns the listener fd with
    ``SECCOMP_FILTER_FLAG_NEW_LISTENER``, else 0. Uses prctl(PR_SET_SECCOMP) when the kernel
    has no seccomp(2) and no flags were asked for.
    """
    if not program or len(program) > BPF_MAXINSNS:
        raise ValueError(f"a BPF program has 1..{BPF_MAXINSNS} instructions, not {len(program)}")
    array = (_CSockFilter * len(program))(*(_CSockFilter(*insn) for insn in program))
    fprog = _CSockFprog(len(program), ctypes.cast(array, ctypes.POINTER(_CSockFilter)))
    try:
        return syscall("seccomp", SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(fprog))
    except OSError as exc:
        if exc.errno != errno.ENOSYS or flags:
            raise
    prctl.prctl(prctl.PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
    return 0


def action_available(action: int) -> bool:
    """True when the kernel supports filter return ``action`` (``SECCOMP_RET_*``)."""
    value = ctypes.c_uint32(action)
    try:
        syscall("seccomp", SECCOMP_GET_ACTION_AVAIL, 0, ctypes.byref(value))
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            return False
        raise
    return True
