"""``fork()`` straight into a cgroup v2: clone3(2) with ``CLONE_INTO_CGROUP``.

Moving a process into a cgroup afterwards (its pid written to ``cgroup.procs``) takes the
kernel's global threadgroup lock for writing, which first waits out an RCU grace period:
about 10 ms, on every container create. A child cloned into its cgroup never moves, and
only takes that lock's cheap read side (Linux 5.7+; cgroup v2 only).

Python has no clone3, so :func:`fork_into_cgroup` does what ``os.fork()`` does around the
system call: ``PyOS_BeforeFork()`` (at-fork hooks, the import lock), the call, then
``PyOS_AfterFork_Child()`` or ``PyOS_AfterFork_Parent()``, with the GIL held throughout.
What glibc's own ``fork()`` adds (resetting its locks and its cached thread id in the child)
matters only with other threads or to code that trusts the cached id; call it from a
single-threaded process whose child does not rely on either (glibc's ``raise`` asks the
kernel for the id; a later ``os.fork()`` in the child sets a correct one for its child).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import signal
from typing import Final

__all__ = ["CLONE_INTO_CGROUP", "fork_into_cgroup"]

CLONE_INTO_CGROUP: Final = 0x200000000
_SYS_CLONE3: Final = {"x86_64": 435, "aarch64": 435}


class _CloneArgs(ctypes.Structure):
    """struct clone_args (linux/sched.h), up to ``cgroup`` (CLONE_ARGS_SIZE_VER2)."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags",
            "pidfd",
            "child_tid",
            "parent_tid",
            "exit_signal",
            "stack",
            "stack_size",
            "tls",
            "set_tid",
            "set_tid_size",
            "cgroup",
        )
    ]


# PyDLL: called with the GIL held, as os.fork() calls fork().
_LIBC: Final = ctypes.PyDLL(None, use_errno=True)
_LIBC.syscall.restype = ctypes.c_long
_API: Final = ctypes.pythonapi


def fork_into_cgroup(cgroup_fd: int) -> int:
    """Fork this process into the cgroup v2 directory open as ``cgroup_fd``; return 0 in
    the child and the child's pid in the parent, as ``os.fork()``.

    Raises ``OSError`` (``ENOSYS`` on a kernel or machine without clone3, ``EBUSY`` for a
    cgroup that has controllers enabled for its children, …); nothing was forked then.
    """
    number = _SYS_CLONE3.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, f"clone3: no syscall number for {platform.machine()}")
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=signal.SIGCHLD, cgroup=cgroup_fd)
    _API.PyOS_BeforeFork()
    pid = _LIBC.syscall(
        ctypes.c_long(number), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args))
    )
    if pid == 0:
        _API.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    _API.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3: {os.strerror(err)}")
    return int(pid)
