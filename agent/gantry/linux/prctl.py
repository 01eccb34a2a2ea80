"""prctl(2) operations on the calling process (or, for some, the calling thread)."""

from __future__ import annotations

import ctypes
import signal
from typing import Final

from gantry.linux._libc import LIBC, check

PR_SET_PDEATHSIG: Final = 1
PR_GET_PDEATHSIG: Final = 2
PR_GET_DUMPABLE: Final = 3
PR_SET_DUMPABLE: Final = 4
PR_GET_KEEPCAPS: Final = 7
PR_SET_KEEPCAPS: Final = 8
PR_SET_NAME: Final = 15
PR_GET_NAME: Final = 16
PR_GET_SECCOMP: Final = 21
PR_SET_SECCOMP: Final = 22
PR_CAPBSET_READ: Final = 23
PR_CAPBSET_DROP: Final = 24
PR_GET_SECUREBITS: Final = 27
PR_SET_SECUREBITS: Final = 28
PR_SET_CHILD_SUBREAPER: Final = 36
PR_GET_CHILD_SUBREAPER: Final = 37
PR_SET_NO_NEW_PRIVS: Final = 38
PR_GET_NO_NEW_PRIVS: Final = 39
PR_CAP_AMBIENT: Final = 47
PR_CAP_AMBIENT_IS_SET: Final = 1
PR_CAP_AMBIENT_RAISE: Final = 2
PR_CAP_AMBIENT_LOWER: Final = 3
PR_CAP_AMBIENT_CLEAR_ALL: Final = 4

TASK_COMM_LEN: Final = 16
"""Bytes in a task name including the terminating NUL; longer names are cut."""

_NAMES: Final[dict[int, str]] = {
    PR_SET_PDEATHSIG: "PR_SET_PDEATHSIG",
    PR_GET_PDEATHSIG: "PR_GET_PDEATHSIG",
    PR_GET_DUMPABLE: "PR_GET_DUMPABLE",
    PR_SET_DUMPABLE: "PR_SET_DUMPABLE",
    PR_GET_KEEPCAPS: "PR_GET_KEEPCAPS",
    PR_SET_KEEPCAPS: "PR_SET_KEEPCAPS",
    PR_SET_NAME: "PR_SET_NAME",
    PR_GET_NAME: "PR_GET_NAME",
    PR_GET_SECCOMP: "PR_GET_SECCOMP",
    PR_SET_SECCOMP: "PR_SET_SECCOMP",
    PR_CAPBSET_READ: "PR_CAPBSET_READ",
    PR_CAPBSET_DROP: "PR_CAPBSET_DROP",
    PR_GET_SECUREBITS: "PR_GET_SECUREBITS",
    PR_SET_SECUREBITS: "PR_SET_SECUREBITS",
    PR_SET_CHILD_SUBREAPER: "PR_SET_CHILD_SUBREAPER",
    PR_GET_CHILD_SUBREAPER: "PR_GET_CHILD_SUBREAPER",
    PR_SET_NO_NEW_PRIVS: "PR_SET_NO_NEW_PRIVS",
    PR_GET_NO_NEW_PRIVS: "PR_GET_NO_NEW_PRIVS",
    PR_CAP_AMBIENT: "PR_CAP_AMBIENT",
}


def prctl(option: int, arg2: object = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """Call prctl(2) and return its result; ``arg2`` may be a ctypes pointer/buffer.

    Raises ``OSError`` naming the option (``prctl(PR_SET_NO_NEW_PRIVS): …``).
    """
    second = ctypes.c_ulong(arg2) if isinstance(arg2, int) else arg2
    ctypes.set_errno(0)
    ret = int(
        LIBC.prctl(
            ctypes.c_int(option),
            second,
            ctypes.c_ulong(arg3),
            ctypes.c_ulong(arg4),
            ctypes.c_ulong(arg5),
        )
    )
    return check(ret, f"prctl({_NAMES.get(option, option)})")


def set_no_new_privs() -> None:
    """Set no_new_privs: execve can no longer grant privileges (setuid bits, file caps).

    It is inherited by children and cannot be unset.
    """
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def get_no_new_privs() -> bool:
    """True when no_new_privs is set on the calling thread."""
    return prctl(PR_GET_NO_NEW_PRIVS) == 1


def set_dumpable(dumpable: bool) -> None:
    """Set whether the process may be ptraced/core-dumped and its /proc files owned by it.

    Non-dumpable while joining a container's namespaces keeps the container from opening
    our /proc/<pid>/exe and overwriting the binary behind it (CVE-2019-5736).
    """
    prctl(PR_SET_DUMPABLE, int(dumpable))


def get_dumpable() -> bool:
    """True when the process is dumpable."""
    return prctl(PR_GET_DUMPABLE) == 1


def set_child_subreaper(enabled: bool = True) -> None:
    """Make orphaned descendants re-parent to this process instead of to PID 1."""
    prctl(PR_SET_CHILD_SUBREAPER, int(enabled))


def get_child_subreaper() -> bool:
    """True when this process is a child subreaper."""
    value = ctypes.c_int(0)
    prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value))
    return value.value != 0


def set_pdeathsig(sig: int | signal.Signals) -> None:
    """Ask for ``sig`` when the parent *thread* dies (0 clears it).

    Reset on execve of a setuid binary and on fork; note it fires on the death of the
    creating thread, not of the whole parent process.
    """
    prctl(PR_SET_PDEATHSIG, int(sig))


def get_pdeathsig() -> int:
    """Return the parent-death signal, 0 when none."""
    value = ctypes.c_int(0)
    prctl(PR_GET_PDEATHSIG, ctypes.byref(value))
    return value.value


def set_name(name: str) -> None:
    """Set the calling thread's name (``comm``); cut to 15 bytes by the kernel."""
    raw = name.encode()[: TASK_COMM_LEN - 1]
    prctl(PR_SET_NAME, ctypes.c_char_p(raw))


def get_name() -> str:
    """Return the calling thread's name (``comm``)."""
    buf = ctypes.create_string_buffer(TASK_COMM_LEN)
    prctl(PR_GET_NAME, buf)
    return buf.value.decode(errors="surrogateescape")


def set_keepcaps(keep: bool) -> None:
    """Keep permitted capabilities across a setuid from 0 to non-zero ids."""
    prctl(PR_SET_KEEPCAPS, int(keep))


def get_keepcaps() -> bool:
    """True when the keep-capabilities flag is set."""
    return prctl(PR_GET_KEEPCAPS) == 1


def get_securebits() -> int:
    """Return the securebits of the calling thread (``SECBIT_*``)."""
    return prctl(PR_GET_SECUREBITS)


def set_securebits(bits: int) -> None:
    """Set the securebits of the calling thread (needs CAP_SETPCAP)."""
    prctl(PR_SET_SECUREBITS, bits)


def get_seccomp_mode() -> int:
    """Return the seccomp mode of the calling thread: 0 off, 1 strict, 2 filter."""
    return prctl(PR_GET_SECCOMP)


def capbset_read(cap: int) -> bool:
    """True when capability ``cap`` is in the bounding set (EINVAL for an unknown one)."""
    return prctl(PR_CAPBSET_READ, cap) == 1


def capbset_drop(cap: int) -> None:
    """Remove ``cap`` from the bounding set for good (needs CAP_SETPCAP)."""
    prctl(PR_CAPBSET_DROP, cap)


def ambient_is_set(cap: int) -> bool:
    """True when ``cap`` is in the ambient set."""
    return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap) == 1


def ambient_raise(cap: int) -> None:
    """Add ``cap`` to the ambient set; it must be permitted and inheritable already."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


def ambient_lower(cap: int) -> None:
    """Remove ``cap`` from the ambient set."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, cap)


def ambient_clear_all() -> None:
    """Empty the ambient set."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
