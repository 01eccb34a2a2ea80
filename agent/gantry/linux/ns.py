"""Namespaces: unshare(2), setns(2), and the names the kernel and the OCI spec give them."""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Final

from gantry.linux._libc import StrPath, encode_path, libc_call
from gantry.linux.proc import ProcPid, proc_path

CLONE_NEWTIME: Final = 0x00000080
CLONE_FS: Final = 0x00000200
CLONE_FILES: Final = 0x00000400
CLONE_NEWNS: Final = 0x00020000
CLONE_SYSVSEM: Final = 0x00040000
CLONE_NEWCGROUP: Final = 0x02000000
CLONE_NEWUTS: Final = 0x04000000
CLONE_NEWIPC: Final = 0x08000000
CLONE_NEWUSER: Final = 0x10000000
CLONE_NEWPID: Final = 0x20000000
CLONE_NEWNET: Final = 0x40000000


class Namespace(enum.Enum):
    """A namespace kind; the value is its file name under ``/proc/<pid>/ns``."""

    MOUNT = "mnt"
    UTS = "uts"
    IPC = "ipc"
    NET = "net"
    PID = "pid"
    USER = "user"
    CGROUP = "cgroup"
    TIME = "time"

    @property
    def flag(self) -> int:
        """The ``CLONE_NEW*`` flag that creates (and, for setns, names) this kind."""
        return _FLAGS[self]

    @property
    def oci_name(self) -> str:
        """The name of this kind in an OCI runtime spec's ``linux.namespaces[].type``."""
        return _OCI_NAMES[self]

    @property
    def proc_name(self) -> str:
        """The file name of this kind under ``/proc/<pid>/ns``."""
        return self.value

    @classmethod
    def from_oci(cls, name: str) -> Namespace:
        """Return the kind the OCI spec calls ``name``; ``ValueError`` names an unknown one."""
        for kind, oci in _OCI_NAMES.items():
            if oci == name:
                return kind
        known = ", ".join(sorted(_OCI_NAMES.values()))
        raise ValueError(f"unknown namespace type {name!r} (known: {known})")

    @classmethod
    def from_flags(cls, flags: int) -> frozenset[Namespace]:
        """Return the kinds whose ``CLONE_NEW*`` flag is set in ``flags``."""
        return frozenset(kind for kind in cls if flags & kind.flag)


_FLAGS: Final[dict[Namespace, int]] = {
    Namespace.MOUNT: CLONE_NEWNS,
    Namespace.UTS: CLONE_NEWUTS,
    Namespace.IPC: CLONE_NEWIPC,
    Namespace.NET: CLONE_NEWNET,
    Namespace.PID: CLONE_NEWPID,
    Namespace.USER: CLONE_NEWUSER,
    Namespace.CGROUP: CLONE_NEWCGROUP,
    Namespace.TIME: CLONE_NEWTIME,
}
_OCI_NAMES: Final[dict[Namespace, str]] = {
    Namespace.MOUNT: "mount",
    Namespace.UTS: "uts",
    Namespace.IPC: "ipc",
    Namespace.NET: "network",
    Namespace.PID: "pid",
    Namespace.USER: "user",
    Namespace.CGROUP: "cgroup",
    Namespace.TIME: "time",
}


def flags_of(kinds: frozenset[Namespace] | set[Namespace] | list[Namespace]) -> int:
    """Return the OR of the ``CLONE_NEW*`` flags of ``kinds``."""
    flags = 0
    for kind in kinds:
        flags |= kind.flag
    return flags


def unshare(flags: int) -> None:
    """Move the calling thread into new namespaces (and/or unshare ``CLONE_FS``/``FILES``).

    ``CLONE_NEWPID`` affects only children forked afterwards; ``CLONE_NEWUSER`` must come
    alone when the caller wants to write id maps before creating the others.
    """
    libc_call("unshare", flags, path=hex(flags))


def setns(fd: int, kind: Namespace | None = None) -> None:
    """Join the namespace ``fd`` refers to (a ``/proc/<pid>/ns/*`` file or a pidfd).

    With ``kind`` the kernel refuses an fd of another kind (EINVAL), which guards against a
    path that was swapped under us; ``None`` accepts any kind.
    """
    libc_call("setns", fd, kind.flag if kind is not None else 0, path=f"fd {fd}")


def setns_pidfd(pidfd: int, kinds: frozenset[Namespace] | set[Namespace]) -> None:
    """Join several namespaces of the process behind ``pidfd`` at once (Linux 5.8+)."""
    libc_call("setns", pidfd, flags_of(kinds), path=f"pidfd {pidfd}")


def ns_path(pid: ProcPid, kind: Namespace) -> Path:
    """Return ``/proc/<pid>/ns/<kind>``."""
    return proc_path(pid, "ns") / kind.proc_name


def open_ns(pid: ProcPid, kind: Namespace) -> int:
    """Open the namespace file of ``pid`` for :func:`setns`; the fd is close-on-exec."""
    return os.open(ns_path(pid, kind), os.O_RDONLY | os.O_CLOEXEC)


def join(path: StrPath, kind: Namespace | None = None) -> None:
    """Join the namespace at ``path`` (a ``/proc/<pid>/ns/*`` file or a bind mount of one)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc_call("setns", fd, kind.flag if kind is not None else 0, path=path)
    finally:
        os.close(fd)


def ns_inode(pid: ProcPid, kind: Namespace) -> int:
    """Return the inode number that identifies ``pid``'s namespace of ``kind``.

    Two processes share a namespace exactly when these numbers (on the nsfs device) match.
    """
    return os.stat(ns_path(pid, kind)).st_ino


def sethostname(name: str) -> None:
    """Set the hostname of the calling process's UTS namespace."""
    raw = encode_path(name)
    libc_call("sethostname", raw, len(raw), path=name)


def setdomainname(name: str) -> None:
    """Set the NIS domain name of the calling process's UTS namespace."""
    raw = encode_path(name)
    libc_call("setdomainname", raw, len(raw), path=name)
