"""The one libc handle of gantry.linux, and the checked ways to call into it.

Everything here raises :class:`OSError` carrying the kernel's errno and a message that names
the call, so a failure deep in container set-up reads like ``mount: Permission denied:
'/run/x' -> '/rootfs/proc'`` rather than a bare ``-1``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Mapping
from typing import Final

from gantry.linux import syscalls_aarch64, syscalls_x86_64

StrPath = str | os.PathLike[str]
"""A filesystem path as the callers hold it."""

LIBC: Final = ctypes.CDLL(None, use_errno=True)
"""The C library already loaded into this process (glibc); ``use_errno`` so errno survives."""

# Generated from the kernel headers (see _gen_syscalls.py); the seccomp compiler uses the same.
_SYSCALL_TABLES: Final[dict[str, Mapping[str, int]]] = {
    "x86_64": syscalls_x86_64.SYSCALLS,
    "aarch64": syscalls_aarch64.SYSCALLS,
}

AT_FDCWD: Final = -100


def syscall_number(name: str) -> int:
    """Return the number of system call ``name`` on this machine.

    Raises ``OSError(ENOSYS)`` for a call this module has no number for on this
    architecture, so callers treat it exactly like a kernel without the call.
    """
    number = _SYSCALL_TABLES.get(platform.machine(), {}).get(name)
    if number is None:
        raise OSError(errno.ENOSYS, f"{name}: no syscall number known for {platform.machine()}")
    return number


def encode_path(path: StrPath | bytes) -> bytes:
    """Return ``path`` as the bytes the kernel sees (surrogate-escaped like ``os``)."""
    return os.fsencode(path)


def raise_errno(call: str, path: object = None, path2: object = None) -> None:
    """Raise the OSError for the errno left by the last ctypes call, naming ``call``.

    ``path``/``path2`` become the exception's ``filename``/``filename2`` (shown as
    ``'a' -> 'b'``); anything that is not a path is shown as its ``str``.
    """
    err = ctypes.get_errno()
    message = f"{call}: {os.strerror(err)}"
    if path is None:
        raise OSError(err, message)
    if path2 is None:
        raise OSError(err, message, _shown(path))
    raise OSError(err, message, _shown(path), None, _shown(path2))


def _shown(value: object) -> str:
    if isinstance(value, str | bytes | os.PathLike):
        return os.fsdecode(value)
    return str(value)


def check(ret: int, call: str, path: object = None, path2: object = None) -> int:
    """Return ``ret`` unchanged unless it is -1, in which case raise as :func:`raise_errno`."""
    if ret == -1:
        raise_errno(call, path, path2)
    return ret


def _c_arg(value: object) -> object:
    # Every integer goes out as a C long: syscall(2) is variadic, and a plain Python int would
    # be passed as a 32-bit int whose upper register half the kernel may read as garbage.
    if isinstance(value, bool):
        return ctypes.c_long(int(value))
    if isinstance(value, int):
        return ctypes.c_long(value)
    if isinstance(value, str):
        return encode_path(value)
    return value


def syscall(name: str, *args: object, path: object = None, path2: object = None) -> int:
    """Invoke system call ``name`` with ``args`` and return its non-negative result.

    Integers are passed as C longs, ``str`` as filesystem-encoded bytes; ``bytes``, ``None``
    and ctypes objects (``byref``, pointers, buffers) go through unchanged. On failure raises
    ``OSError`` whose message names the call and, when given, ``path``/``path2``.
    """
    number = syscall_number(name)
    ctypes.set_errno(0)
    ret = int(LIBC.syscall(ctypes.c_long(number), *(_c_arg(a) for a in args)))
    return check(ret, name, path, path2)


def libc_call(name: str, *args: object, path: object = None, path2: object = None) -> int:
    """Call the libc function ``name`` (which returns int, -1 with errno on failure)."""
    func = getattr(LIBC, name)
    ctypes.set_errno(0)
    ret = int(func(*(_c_arg(a) for a in args)))
    return check(ret, name, path, path2)
