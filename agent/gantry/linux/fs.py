"""Path resolution that cannot leave a root, and small fd/device helpers.

Everything that acts on a path inside a container rootfs should resolve it here, once, into
an fd, and then act on the fd: a path checked first and used later can be redirected by a
symlink planted in between (tar-slip, CVE-2018-15664, CVE-2021-30465).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections import deque
from typing import Final

from gantry.linux._libc import StrPath, encode_path, syscall

RESOLVE_NO_XDEV: Final = 0x01
RESOLVE_NO_MAGICLINKS: Final = 0x02
RESOLVE_NO_SYMLINKS: Final = 0x04
RESOLVE_BENEATH: Final = 0x08
RESOLVE_IN_ROOT: Final = 0x10
RESOLVE_CACHED: Final = 0x20

MAX_SYMLINKS: Final = 40
"""Symlinks followed in one resolution before ELOOP, as the kernel's MAXSYMLINKS."""

_OPENAT2_RETRIES: Final = 16


class OpenHow(ctypes.Structure):
    """``struct open_how`` of openat2(2) (OPEN_HOW_SIZE_VER0, 24 bytes)."""

    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


def proc_fd_path(fd: int) -> str:
    """Return the /proc path that names ``fd`` of the calling thread."""
    # thread-self, not self: a thread that unshared its fd table (CLONE_FILES) sees its own.
    return f"/proc/thread-self/fd/{fd}"


def fd_path(fd: int) -> str:
    """Return the path the kernel reports for ``fd`` (for messages and checks, not reuse)."""
    return os.readlink(proc_fd_path(fd))


def reopen(fd: int, flags: int) -> int:
    """Open the very inode ``fd`` (typically O_PATH) refers to again, with ``flags``.

    Goes through the /proc magic link, so a name swapped meanwhile cannot redirect it.
    """
    return os.open(proc_fd_path(fd), flags | os.O_CLOEXEC)


def openat2(dirfd: int, path: StrPath, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2) (Linux 5.6+): open ``path`` relative to ``dirfd`` under ``RESOLVE_*`` rules.

    ``O_CLOEXEC`` is always added. ``mode`` is passed only with ``O_CREAT``/``O_TMPFILE``
    (the kernel rejects it otherwise). Raises ``OSError(ENOSYS)`` on older kernels.
    """
    # O_TMPFILE includes the O_DIRECTORY bit, so test for all of its bits.
    creates = bool(flags & os.O_CREAT) or flags & os.O_TMPFILE == os.O_TMPFILE
    how = OpenHow(flags | os.O_CLOEXEC, mode if creates else 0, resolve)
    for _attempt in range(_OPENAT2_RETRIES):
        try:
            return syscall(
                "openat2",
                dirfd,
                encode_path(path),
                ctypes.byref(how),
                ctypes.sizeof(how),
                path=path,
            )
        except OSError as exc:
            # With RESOLVE_IN_ROOT/BENEATH the kernel answers EAGAIN when a concurrent rename
            # could have let ".." escape; it asks us to simply try again.
            if exc.errno != errno.EAGAIN or resolve & RESOLVE_CACHED:
                raise
    raise OSError(errno.EAGAIN, "openat2: kept racing with renames", os.fspath(path))


def open_in_root(root_fd: int, path: StrPath, flags: int = os.O_PATH, mode: int = 0o644) -> int:
    """Open ``path`` as if ``root_fd`` were ``/``: absolute symlinks and ``..`` stay inside.

    Uses openat2 with ``RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`` (a /proc magic link inside
    the root fails with ELOOP) and falls back to :func:`walk_in_root` on kernels without
    openat2. Returns a close-on-exec fd. An empty ``path`` opens the root itself.
    """
    # An empty path names the root itself, as in the walk (openat2 alone would say ENOENT).
    target = os.fspath(path) or "."
    try:
        return openat2(root_fd, target, flags, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
    return walk_in_root(root_fd, path, flags, mode)


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


def _fail(err: int, path: StrPath) -> OSError:
    return OSError(err, f"walk_in_root: {os.strerror(err)}", os.fspath(path))


def walk_in_root(
    root_fd: int,
    path: StrPath,
    flags: int = os.O_PATH,
    mode: int = 0o644,
    *,
    make_dirs: bool = False,
    dir_mode: int = 0o755,
) -> int:
    """Resolve ``path`` inside ``root_fd`` one component at a time, never leaving the root.

    Each component is opened ``O_PATH|O_NOFOLLOW``; symlinks are read and their text is
    resolved again inside the root (absolute ones from the root), so a /proc magic link is
    treated as its text and never followed by the kernel; ``..`` never climbs above the
    root. At most :data:`MAX_SYMLINKS` links are followed (then ELOOP). With ``make_dirs``
    every missing component is created as a directory and an ``O_PATH`` fd of the final
    directory is returned (``flags`` and ``mode`` are ignored).
    """
    text = os.fspath(path)
    pending = deque(_components(text))
    stack = [root_fd]  # stack[0] is the caller's; the rest are ours to close
    links = 0
    made: str | None = None  # the component created last, to stop if it vanishes again
    try:
        while pending:
            name = pending.popleft()
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            last = not pending
            parent = stack[-1]
            try:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            except FileNotFoundError:
                if make_dirs and made != name:
                    made = name
                    # FileExistsError: lost a race with another creator; open what is there.
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, dir_mode, dir_fd=parent)
                    pending.appendleft(name)
                    continue
                if last and flags & os.O_CREAT:
                    return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)
                raise _fail(errno.ENOENT, text) from None
            made = None
            kind = stat.S_IFMT(os.fstat(fd).st_mode)
            if kind == stat.S_IFLNK:
                if last and not make_dirs and flags & os.O_NOFOLLOW:
                    if flags & os.O_PATH:
                        return fd  # the caller asked for the link itself
                    os.close(fd)
                    raise _fail(errno.ELOOP, text)
                if last and flags & os.O_CREAT and flags & os.O_EXCL:
                    os.close(fd)
                    raise _fail(errno.EEXIST, text)
                links += 1
                target = os.readlink("", dir_fd=fd)
                os.close(fd)
                if links > MAX_SYMLINKS:
                    raise _fail(errno.ELOOP, text)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                pending.extendleft(reversed(_components(target)))
                continue
            if not last or make_dirs:
                if kind != stat.S_IFDIR:
                    os.close(fd)
                    raise _fail(errno.ENOTDIR, text)
                stack.append(fd)
                continue
            if flags & os.O_PATH:
                if flags & os.O_DIRECTORY and kind != stat.S_IFDIR:
                    os.close(fd)
                    raise _fail(errno.ENOTDIR, text)
                return fd
            os.close(fd)
            # Reopen by name in the verified parent; O_NOFOLLOW turns a symlink swapped in
            # since the check into ELOOP instead of a jump out of the root.
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)
        # The path named a directory already on the stack ("", "/", "a/..", a link to a dir).
        if make_dirs:
            return os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=stack[-1])
        return os.open(".", flags | os.O_CLOEXEC, mode, dir_fd=stack[-1])
    finally:
        for fd in stack[1:]:
            os.close(fd)


def mkdir_in_root(root_fd: int, path: StrPath, mode: int = 0o755) -> int:
    """Create ``path`` and its missing parents inside ``root_fd`` (``mkdir -p`` that cannot
    be redirected out of the root) and return an ``O_PATH`` fd of the directory."""
    return walk_in_root(root_fd, path, make_dirs=True, dir_mode=mode)


def open_root(path: StrPath) -> int:
    """Open a directory to serve as the ``root_fd`` of :func:`open_in_root`."""
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


# --- device nodes ----------------------------------------------------------------------------

DEVICE_TYPES: Final[dict[str, int]] = {
    "c": stat.S_IFCHR,
    "u": stat.S_IFCHR,
    "b": stat.S_IFBLK,
    "p": stat.S_IFIFO,
}
"""OCI ``linux.devices[].type`` letters and the file type each creates."""


def makedev(major: int, minor: int) -> int:
    """Return the ``dev_t`` for ``major:minor``."""
    return os.makedev(major, minor)


def device_numbers(rdev: int) -> tuple[int, int]:
    """Return ``(major, minor)`` of a ``dev_t`` such as ``st_rdev``."""
    return os.major(rdev), os.minor(rdev)


def mknod(
    path: StrPath,
    kind: str,
    major: int = 0,
    minor: int = 0,
    mode: int = 0o666,
    *,
    dir_fd: int | None = None,
) -> None:
    """Create a device node or fifo; ``kind`` is an OCI device type letter (c, u, b, p).

    The process umask applies to ``mode``, as with mknod(2).
    """
    if kind not in DEVICE_TYPES:
        raise ValueError(f"unknown device type {kind!r} (known: b, c, p, u)")
    rdev = 0 if kind == "p" else makedev(major, minor)
    os.mknod(path, DEVICE_TYPES[kind] | (mode & 0o7777), rdev, dir_fd=dir_fd)


def is_device(fd: int, kind: str, major: int, minor: int) -> bool:
    """True when ``fd`` is a device node of ``kind`` (c/u/b) with exactly ``major:minor``.

    For checks like "is this really /dev/null (1:3)" before binding it over a masked path
    (CVE-2025-31133, where a symlink stood in for /dev/null).
    """
    st = os.fstat(fd)
    return stat.S_IFMT(st.st_mode) == DEVICE_TYPES[kind] and device_numbers(st.st_rdev) == (
        major,
        minor,
    )
