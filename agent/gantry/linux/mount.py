"""Mounts: mount(2), umount2(2), pivot_root(2) and the fd-based mount API of Linux 5.2+.

Targets may be given as paths or as file descriptors. An fd target is mounted through
``/proc/thread-self/fd/N``: after resolving a target once, safely, to an O_PATH fd, the mount
lands on exactly that inode even if a symlink is swapped into the path meanwhile
(CVE-2021-30465, where runc checked a path and then mounted by the same path).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from gantry.linux._libc import AT_FDCWD, StrPath, encode_path, libc_call, syscall
from gantry.linux.fs import proc_fd_path

# mount(2) flags.
MS_RDONLY: Final = 0x1
MS_NOSUID: Final = 0x2
MS_NODEV: Final = 0x4
MS_NOEXEC: Final = 0x8
MS_SYNCHRONOUS: Final = 0x10
MS_REMOUNT: Final = 0x20
MS_MANDLOCK: Final = 0x40
MS_DIRSYNC: Final = 0x80
MS_NOSYMFOLLOW: Final = 0x100
MS_NOATIME: Final = 0x400
MS_NODIRATIME: Final = 0x800
MS_BIND: Final = 0x1000
MS_MOVE: Final = 0x2000
MS_REC: Final = 0x4000
MS_SILENT: Final = 0x8000
MS_POSIXACL: Final = 0x10000
MS_UNBINDABLE: Final = 0x20000
MS_PRIVATE: Final = 0x40000
MS_SLAVE: Final = 0x80000
MS_SHARED: Final = 0x100000
MS_RELATIME: Final = 0x200000
MS_STRICTATIME: Final = 0x1000000
MS_LAZYTIME: Final = 0x2000000
MS_PROPAGATION: Final = MS_SHARED | MS_SLAVE | MS_PRIVATE | MS_UNBINDABLE

# umount2(2) flags.
MNT_FORCE: Final = 0x1
MNT_DETACH: Final = 0x2
MNT_EXPIRE: Final = 0x4
UMOUNT_NOFOLLOW: Final = 0x8

# open_tree(2), move_mount(2), fsopen(2), fsconfig(2), fsmount(2), fspick(2).
AT_SYMLINK_NOFOLLOW: Final = 0x100
AT_NO_AUTOMOUNT: Final = 0x800
AT_EMPTY_PATH: Final = 0x1000
AT_RECURSIVE: Final = 0x8000
OPEN_TREE_CLONE: Final = 0x1
OPEN_TREE_CLOEXEC: Final = os.O_CLOEXEC
MOVE_MOUNT_F_SYMLINKS: Final = 0x1
MOVE_MOUNT_F_AUTOMOUNTS: Final = 0x2
MOVE_MOUNT_F_EMPTY_PATH: Final = 0x4
MOVE_MOUNT_T_SYMLINKS: Final = 0x10
MOVE_MOUNT_T_AUTOMOUNTS: Final = 0x20
MOVE_MOUNT_T_EMPTY_PATH: Final = 0x40
MOVE_MOUNT_SET_GROUP: Final = 0x100
MOVE_MOUNT_BENEATH: Final = 0x200
FSOPEN_CLOEXEC: Final = 0x1
FSPICK_CLOEXEC: Final = 0x1
FSPICK_SYMLINK_NOFOLLOW: Final = 0x2
FSPICK_NO_AUTOMOUNT: Final = 0x4
FSPICK_EMPTY_PATH: Final = 0x8
FSMOUNT_CLOEXEC: Final = 0x1
FSCONFIG_SET_FLAG: Final = 0
FSCONFIG_SET_STRING: Final = 1
FSCONFIG_SET_BINARY: Final = 2
FSCONFIG_SET_PATH: Final = 3
FSCONFIG_SET_PATH_EMPTY: Final = 4
FSCONFIG_SET_FD: Final = 5
FSCONFIG_CMD_CREATE: Final = 6
FSCONFIG_CMD_RECONFIGURE: Final = 7
FSCONFIG_CMD_CREATE_EXCL: Final = 8

# mount_setattr(2) and fsmount(2) attributes.
MOUNT_ATTR_RDONLY: Final = 0x1
MOUNT_ATTR_NOSUID: Final = 0x2
MOUNT_ATTR_NODEV: Final = 0x4
MOUNT_ATTR_NOEXEC: Final = 0x8
MOUNT_ATTR__ATIME: Final = 0x70
MOUNT_ATTR_RELATIME: Final = 0x0
MOUNT_ATTR_NOATIME: Final = 0x10
MOUNT_ATTR_STRICTATIME: Final = 0x20
MOUNT_ATTR_NODIRATIME: Final = 0x80
MOUNT_ATTR_IDMAP: Final = 0x100000
MOUNT_ATTR_NOSYMFOLLOW: Final = 0x200000

Target = StrPath | int
"""A mount point: a path, or an (ideally O_PATH) fd mounted through /proc/thread-self/fd."""


def _target(target: Target) -> str:
    return proc_fd_path(target) if isinstance(target, int) else os.fspath(target)


def _opt(value: str | None) -> bytes | None:
    return None if value is None else encode_path(value)


def mount(
    source: Target | None,
    target: Target,
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2) ``source`` on ``target``; an int for either is taken as an fd to go through."""
    src = None if source is None else _target(source)
    dst = _target(target)
    shown = src if src is not None else fstype
    libc_call(
        "mount", _opt(src), encode_path(dst), _opt(fstype), flags, _opt(data), path=shown, path2=dst
    )


def umount2(target: Target, flags: int = 0) -> None:
    """Unmount the mount at ``target`` (``MNT_DETACH`` for a lazy unmount)."""
    dst = _target(target)
    libc_call("umount2", encode_path(dst), flags, path=dst)


def pivot_root(new_root: StrPath, put_old: StrPath) -> None:
    """Make ``new_root`` the root mount of this mount namespace, moving the old one to
    ``put_old``. Both may be ``"."``: the old root is then mounted on top of the new one at
    the working directory, and unmounting ``"."`` (``MNT_DETACH``) uncovers the new root."""
    syscall(
        "pivot_root",
        encode_path(new_root),
        encode_path(put_old),
        path=os.fspath(new_root),
        path2=os.fspath(put_old),
    )


def set_propagation(target: Target, propagation: int, *, recursive: bool = True) -> None:
    """Set the propagation type (one of ``MS_SHARED/SLAVE/PRIVATE/UNBINDABLE``)."""
    if propagation not in (MS_SHARED, MS_SLAVE, MS_PRIVATE, MS_UNBINDABLE):
        raise ValueError(f"not a propagation type: {propagation:#x}")
    mount(None, target, None, propagation | (MS_REC if recursive else 0))


def make_rprivate(target: Target = "/") -> None:
    """Make ``target`` and every mount below it private.

    Right after ``unshare(CLONE_NEWNS)`` the new namespace's mounts are still peers of the
    host's wherever the host's are shared (systemd makes ``/`` shared), so any later mount
    would propagate back to the host until this is done.
    """
    set_propagation(target, MS_PRIVATE, recursive=True)


def bind(source: Target, target: Target, *, recursive: bool = True) -> None:
    """Bind-mount ``source`` on ``target`` (with its submounts when ``recursive``)."""
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))


def move(source: Target, target: Target) -> None:
    """Move the mount at ``source`` to ``target`` (MS_MOVE)."""
    mount(source, target, None, MS_MOVE)


# statvfs(3) reports per-mount flags with ST_* values; only some coincide with MS_* (ST_RELATIME
# is 0x1000, which is MS_BIND), so translate bit by bit.
_ST_TO_MS: Final[tuple[tuple[int, int], ...]] = (
    (os.ST_RDONLY, MS_RDONLY),
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_SYNCHRONOUS, MS_SYNCHRONOUS),
    (os.ST_MANDLOCK, MS_MANDLOCK),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
    (0x2000, MS_NOSYMFOLLOW),  # ST_NOSYMFOLLOW (Linux 5.10), absent from Python's os
)


def ms_flags_from_statvfs(f_flag: int) -> int:
    """Translate a ``statvfs().f_flag`` value into the equivalent ``MS_*`` flags."""
    flags = 0
    for st_bit, ms_bit in _ST_TO_MS:
        if f_flag & st_bit:
            flags |= ms_bit
    # No atime bit at all means the mount is strictatime; say so, so the result describes the
    # mount completely and a remount built from it restates (rather than resets) its atime.
    if not flags & (MS_NOATIME | MS_RELATIME):
        flags |= MS_STRICTATIME
    return flags


def mount_flags(target: Target) -> int:
    """Return the per-mount ``MS_*`` flags (ro, nosuid, nodev, noexec, atime…) of ``target``."""
    return ms_flags_from_statvfs(os.statvfs(_target(target)).f_flag)


def remount(target: Target, set_flags: int = 0, clear_flags: int = 0) -> None:
    """Change the per-mount flags of the (bind) mount at ``target``.

    The flags the mount has now are kept unless cleared: inside a user namespace the kernel
    locks nosuid/nodev/noexec/atime on mounts inherited from the host and refuses (EPERM) a
    bind remount that would drop them, even by omission.
    """
    flags = (mount_flags(target) | set_flags) & ~clear_flags
    mount(None, target, None, MS_REMOUNT | MS_BIND | flags)


def remount_ro(target: Target) -> None:
    """Make the mount at ``target`` read-only, keeping its other per-mount flags.

    Only this mount changes; the superblock (and other mounts of it) stay writable.
    """
    remount(target, set_flags=MS_RDONLY)


# --- options ---------------------------------------------------------------------------

# option -> (flags to set, flags to clear). Names as mount(8) and the OCI spec use them.
_FLAG_OPTIONS: Final[dict[str, tuple[int, int]]] = {
    "ro": (MS_RDONLY, 0),
    "rw": (0, MS_RDONLY),
    "nosuid": (MS_NOSUID, 0),
    "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0),
    "dev": (0, MS_NODEV),
    "noexec": (MS_NOEXEC, 0),
    "exec": (0, MS_NOEXEC),
    "sync": (MS_SYNCHRONOUS, 0),
    "async": (0, MS_SYNCHRONOUS),
    "dirsync": (MS_DIRSYNC, 0),
    "mand": (MS_MANDLOCK, 0),
    "nomand": (0, MS_MANDLOCK),
    "noatime": (MS_NOATIME, 0),
    "atime": (0, MS_NOATIME),
    "nodiratime": (MS_NODIRATIME, 0),
    "diratime": (0, MS_NODIRATIME),
    "relatime": (MS_RELATIME, 0),
    "norelatime": (0, MS_RELATIME),
    "strictatime": (MS_STRICTATIME, 0),
    "nostrictatime": (0, MS_STRICTATIME),
    "lazytime": (MS_LAZYTIME, 0),
    "nolazytime": (0, MS_LAZYTIME),
    "nosymfollow": (MS_NOSYMFOLLOW, 0),
    "symfollow": (0, MS_NOSYMFOLLOW),
    "bind": (MS_BIND, 0),
    "rbind": (MS_BIND | MS_REC, 0),
    "remount": (MS_REMOUNT, 0),
    "silent": (MS_SILENT, 0),
    "loud": (0, MS_SILENT),
    "defaults": (0, 0),
}
_PROPAGATION_OPTIONS: Final[dict[str, int]] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}


@dataclass(frozen=True)
class MountOptions:
    """Mount options split the way the kernel takes them."""

    flags: int = 0
    """``MS_*`` flags for mount(2)."""
    clear: int = 0
    """``MS_*`` flags an option explicitly turned off (``rw``, ``suid``, ``exec``…)."""
    propagation: tuple[int, ...] = ()
    """Propagation changes, in order, each applied by its own mount(2) call."""
    data: str = ""
    """The comma-joined filesystem-specific options (``size=64k,mode=755``)."""


def parse_options(options: Iterable[str]) -> MountOptions:
    """Split mount(8)-style options into flags, propagation changes and data.

    Later options win over earlier ones (``ro,rw`` is writable), like mount(8). Anything not
    a known flag or propagation word is passed to the filesystem as data.
    """
    flags = clear = 0
    propagation: list[int] = []
    data: list[str] = []
    for option in options:
        if option in _FLAG_OPTIONS:
            on, off = _FLAG_OPTIONS[option]
            flags = (flags | on) & ~off
            clear = (clear | off) & ~on
        elif option in _PROPAGATION_OPTIONS:
            propagation.append(_PROPAGATION_OPTIONS[option])
        elif option:
            data.append(option)
    return MountOptions(flags, clear, tuple(propagation), ",".join(data))


# --- the fd-based mount API (Linux 5.2+) -----------------------------------------------------


class MountAttr(ctypes.Structure):
    """``struct mount_attr`` (MOUNT_ATTR_SIZE_VER0, 32 bytes)."""

    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def open_tree(path: StrPath, flags: int = 0, dirfd: int = AT_FDCWD) -> int:
    """open_tree(2): an fd for the mount at ``path``; with ``OPEN_TREE_CLONE`` a detached
    copy of it (``AT_RECURSIVE`` for the whole subtree). The fd is always close-on-exec."""
    return syscall("open_tree", dirfd, encode_path(path), flags | OPEN_TREE_CLOEXEC, path=path)


def move_mount(
    from_dirfd: int,
    from_path: StrPath,
    to_dirfd: int,
    to_path: StrPath,
    flags: int = 0,
) -> None:
    """move_mount(2): attach or move a mount. Use ``MOVE_MOUNT_F_EMPTY_PATH`` with
    ``from_path=""`` to attach the mount an :func:`open_tree`/:func:`fsmount` fd holds."""
    syscall(
        "move_mount",
        from_dirfd,
        encode_path(from_path),
        to_dirfd,
        encode_path(to_path),
        flags,
        path=from_path if from_path else f"fd {from_dirfd}",
        path2=to_path if to_path else f"fd {to_dirfd}",
    )


def attach(mount_fd: int, target: Target) -> None:
    """Attach the detached mount ``mount_fd`` (from open_tree/fsmount) on ``target``."""
    if isinstance(target, int):
        move_mount(mount_fd, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)
    else:
        move_mount(mount_fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)


def mount_setattr(
    path: StrPath,
    *,
    attr_set: int = 0,
    attr_clr: int = 0,
    propagation: int = 0,
    userns_fd: int = 0,
    flags: int = 0,
    dirfd: int = AT_FDCWD,
) -> None:
    """mount_setattr(2): change ``MOUNT_ATTR_*`` of one mount (or, with ``AT_RECURSIVE``, a
    tree). Pass ``dirfd=fd, path=""`` with ``flags=AT_EMPTY_PATH`` to act on an fd."""
    attr = MountAttr(attr_set, attr_clr, propagation, userns_fd)
    syscall(
        "mount_setattr",
        dirfd,
        encode_path(path),
        flags,
        ctypes.byref(attr),
        ctypes.sizeof(attr),
        path=path if path else f"fd {dirfd}",
    )


def fsopen(fstype: str, flags: int = 0) -> int:
    """fsopen(2): a filesystem context for ``fstype``; always close-on-exec."""
    return syscall("fsopen", encode_path(fstype), flags | FSOPEN_CLOEXEC, path=fstype)


def fspick(path: StrPath, flags: int = 0, dirfd: int = AT_FDCWD) -> int:
    """fspick(2): a context to reconfigure the superblock mounted at ``path``."""
    return syscall("fspick", dirfd, encode_path(path), flags | FSPICK_CLOEXEC, path=path)


def fsconfig(
    fs_fd: int, cmd: int, key: str | None = None, value: str | bytes | None = None, aux: int = 0
) -> None:
    """fsconfig(2): set one parameter of (or create/reconfigure) a filesystem context.

    For ``FSCONFIG_SET_BINARY`` the length of ``value`` is passed as ``aux``.
    """
    raw = value.encode() if isinstance(value, str) else value
    if cmd == FSCONFIG_SET_BINARY:
        aux = len(raw or b"")
    syscall("fsconfig", fs_fd, cmd, _opt(key), raw, aux, path=key if key else f"fd {fs_fd}")


def fsmount(fs_fd: int, attr_flags: int = 0, flags: int = 0) -> int:
    """fsmount(2): a detached mount of the created context; always close-on-exec."""
    return syscall("fsmount", fs_fd, flags | FSMOUNT_CLOEXEC, attr_flags, path=f"fd {fs_fd}")


def _probe(call: str, *args: object) -> bool:
    # Called with arguments the kernel must reject; only ENOSYS (no such call, or a seccomp
    # filter answering like one) says the feature is missing.
    try:
        syscall(call, *args)
    except OSError as exc:
        return exc.errno != errno.ENOSYS
    return True


@functools.cache
def have_new_mount_api() -> bool:
    """True when open_tree/move_mount/fsopen/fsconfig/fsmount exist (Linux 5.2+)."""
    return _probe("fsopen", None, 0)


@functools.cache
def have_mount_setattr() -> bool:
    """True when mount_setattr(2) exists (Linux 5.12+)."""
    return _probe("mount_setattr", -1, None, 0, None, 0)
