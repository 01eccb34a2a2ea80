"""The container's /dev: which nodes and links it gets, and how each one is made.

Used by :mod:`gantry.runtime.rootfs` while the container's rootfs is still being assembled
(before pivot_root), with an fd of the container root; every path is resolved inside it.

The node set is the one the runtime spec requires (null zero full random urandom tty) plus
the spec's ``linux.devices``; the links are the ones runc and crun make (``ptmx``,
``fd``, ``stdin``/``stdout``/``stderr``, ``core``). Functions here raise :class:`OSError`
naming the container path; the caller turns that into a ``RootfsError`` of its step.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from gantry.linux import mount
from gantry.linux.fs import device_numbers, is_device, mkdir_in_root, mknod, open_in_root
from gantry.runtime.spec import Device

__all__ = [
    "DEFAULT_DEVICES",
    "DEV_SYMLINKS",
    "DeviceNode",
    "bind_console",
    "bind_node",
    "dev_symlinks",
    "device_nodes",
    "in_user_namespace",
    "make_node",
    "make_symlinks",
]

_DEFAULT_MODE: Final = 0o666


@dataclass(frozen=True)
class DeviceNode:
    """A device node to create at ``path`` (an absolute path under ``/dev``)."""

    path: str
    kind: str
    """An OCI device type letter: ``c``, ``u`` (unbuffered char), ``b`` or ``p`` (fifo)."""
    major: int = 0
    minor: int = 0
    mode: int = _DEFAULT_MODE
    """Permission bits only (no file type)."""
    uid: int = 0
    gid: int = 0


def _char(name: str, major: int, minor: int) -> DeviceNode:
    return DeviceNode(f"/dev/{name}", "c", major, minor)


#: The nodes every container gets (runtime-spec config-linux.md, "Default Devices").
DEFAULT_DEVICES: Final[tuple[DeviceNode, ...]] = (
    _char("null", 1, 3),
    _char("zero", 1, 5),
    _char("full", 1, 7),
    _char("random", 1, 8),
    _char("urandom", 1, 9),
    _char("tty", 5, 0),
)

#: The links every container's /dev gets: name -> link text.
DEV_SYMLINKS: Final[tuple[tuple[str, str], ...]] = (
    # The spec lets /dev/ptmx be a link into the container's own devpts instance, so a pty
    # opened in the container comes from its devpts and never from the host's.
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)


def dev_symlinks(*, have_kcore: bool) -> tuple[tuple[str, str], ...]:
    """The /dev links to make; ``core`` only when the host has a ``/proc/kcore``."""
    if have_kcore:
        return (*DEV_SYMLINKS, ("core", "/proc/kcore"))
    return DEV_SYMLINKS


def _from_spec(device: Device) -> DeviceNode:
    # The spec validated that c/b/u devices carry major and minor; fifos have neither.
    return DeviceNode(
        path=posixpath.normpath(device.path),
        kind=device.type,
        major=device.major or 0,
        minor=device.minor or 0,
        mode=_DEFAULT_MODE if device.file_mode is None else device.file_mode & 0o7777,
        uid=device.uid or 0,
        gid=device.gid or 0,
    )


def device_nodes(devices: Iterable[Device] = ()) -> tuple[DeviceNode, ...]:
    """The defaults followed by the spec's devices; a spec device replaces a default one
    at the same path (a later spec entry replaces an earlier one)."""
    nodes: dict[str, DeviceNode] = {node.path: node for node in DEFAULT_DEVICES}
    for device in devices:
        node = _from_spec(device)
        nodes.pop(node.path, None)  # keep the spec's order for what it adds
        nodes[node.path] = node
    return tuple(nodes.values())


_IDENTITY_MAP: Final = ("0", "0", "4294967295")


def in_user_namespace(uid_map: str) -> bool:
    """True unless ``uid_map`` (the text of /proc/self/uid_map) is the initial namespace's
    identity map ``0 0 4294967295``."""
    lines = [line.split() for line in uid_map.splitlines() if line.strip()]
    return lines != [list(_IDENTITY_MAP)]


# --- acting on a container root fd --------------------------------------------------------


def _relative(path: str) -> str:
    return posixpath.normpath(path).lstrip("/")


@contextlib.contextmanager
def _parent_dir(root_fd: int, path: str) -> Iterator[tuple[int, str]]:
    """Yield an O_PATH fd of the parent of ``path`` (created if missing) and the last name."""
    parent, name = posixpath.split(_relative(path))
    parent_fd = mkdir_in_root(root_fd, parent)
    try:
        yield parent_fd, name
    finally:
        os.close(parent_fd)


def _named(exc: OSError, path: str) -> OSError:
    err = exc.errno or 0
    return OSError(err, exc.strerror or os.strerror(err), path)


@contextlib.contextmanager
def _about(path: str) -> Iterator[None]:
    # Errors from *at calls name only the last component; name the container path.
    try:
        yield
    except OSError as exc:
        raise _named(exc, path) from None


def make_node(root_fd: int, node: DeviceNode) -> None:
    """mknod ``node`` inside the root, owned by ``node.uid:node.gid`` with exactly
    ``node.mode`` (the caller sets umask 0). Whatever is at the path is replaced."""
    with _about(node.path), _parent_dir(root_fd, node.path) as (parent_fd, name):
        try:
            mknod(name, node.kind, node.major, node.minor, node.mode, dir_fd=parent_fd)
        except FileExistsError:
            # The image may ship its own /dev entries, even a symlink where a node should be
            # (CVE-2025-31133 swapped /dev/null for one): never reuse what is there.
            os.unlink(name, dir_fd=parent_fd)
            mknod(name, node.kind, node.major, node.minor, node.mode, dir_fd=parent_fd)
        os.chown(name, node.uid, node.gid, dir_fd=parent_fd, follow_symlinks=False)


def _bind_target(parent_fd: int, name: str) -> int:
    """An O_PATH fd of the file to bind a node over: what is there (a node or a file, which
    may be the host's own in a bound /dev, so it is never removed), else a new empty file.

    A symlink or a directory is refused, never followed: a link at /dev/console would send
    the bind wherever the image points it (CVE-2025-52565).
    """
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    except FileNotFoundError:
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(name, flags, 0o600, dir_fd=parent_fd))
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    mode = os.fstat(fd).st_mode
    if stat.S_ISLNK(mode) or stat.S_ISDIR(mode):
        os.close(fd)
        kind = "a symlink" if stat.S_ISLNK(mode) else "a directory"
        raise OSError(errno.EEXIST, f"is {kind}; refusing to bind a device over it")
    return fd


def _check_host_node(fd: int, node: DeviceNode) -> None:
    st = os.fstat(fd)
    if node.kind == "p":
        if not stat.S_ISFIFO(st.st_mode):
            raise OSError(errno.ENODEV, f"host {node.path} is not a fifo")
    elif not is_device(fd, node.kind, node.major, node.minor):
        major, minor = device_numbers(st.st_rdev)
        raise OSError(
            errno.ENODEV,
            f"host {node.path} is not {node.kind} {node.major}:{node.minor} "
            f"(found {stat.filemode(st.st_mode)[0]} {major}:{minor})",
        )


def bind_node(root_fd: int, node: DeviceNode) -> None:
    """Bind the host's node at the same path over ``node.path`` (inside a user namespace,
    where mknod is refused). The host node must be the device the spec describes."""
    with _about(node.path):
        src_fd = os.open(node.path, os.O_PATH | os.O_CLOEXEC)
        try:
            _check_host_node(src_fd, node)
            with _parent_dir(root_fd, node.path) as (parent_fd, name):
                target_fd = _bind_target(parent_fd, name)
                try:
                    mount.bind(src_fd, target_fd, recursive=False)
                finally:
                    os.close(target_fd)
        finally:
            os.close(src_fd)


def bind_console(root_fd: int, console_path: str) -> None:
    """Bind the pty slave ``console_path`` over ``/dev/console`` (created when missing)."""
    with _about("/dev/console"):
        src_fd = os.open(console_path, os.O_PATH | os.O_CLOEXEC)
        try:
            if not stat.S_ISCHR(os.fstat(src_fd).st_mode):
                raise OSError(errno.ENOTTY, f"console {console_path} is not a character device")
            with _parent_dir(root_fd, "/dev/console") as (parent_fd, name):
                target_fd = _bind_target(parent_fd, name)
                try:
                    mount.bind(src_fd, target_fd, recursive=False)
                finally:
                    os.close(target_fd)
        finally:
            os.close(src_fd)


def make_symlinks(root_fd: int, links: Iterable[tuple[str, str]]) -> None:
    """Create each ``/dev/<name> -> text`` link; an entry already there is left alone
    (a spec device such as ``/dev/ptmx`` wins over the link)."""
    dev_fd = open_in_root(root_fd, "dev", os.O_PATH | os.O_DIRECTORY)
    try:
        for name, text in links:
            with _about(f"/dev/{name}"), contextlib.suppress(FileExistsError):
                os.symlink(text, name, dir_fd=dev_fd)
    finally:
        os.close(dev_fd)
