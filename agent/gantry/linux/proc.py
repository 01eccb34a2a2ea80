"""procfs readers (stat, status, mountinfo) and process handles (pidfd, close_range)."""

from __future__ import annotations

import errno
import os
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

from gantry.linux._libc import syscall
from gantry.linux.caps import from_mask

PROC: Final = Path("/proc")

ProcPid = int | Literal["self", "thread-self"]
"""A /proc directory name: a pid, ``"self"`` or ``"thread-self"``."""


def proc_path(pid: ProcPid, name: str) -> Path:
    """Return ``/proc/<pid>/<name>``."""
    return PROC / str(pid) / name


def _read(pid: ProcPid, name: str) -> str:
    try:
        return proc_path(pid, name).read_text(errors="surrogateescape")
    except FileNotFoundError:
        # The directory vanished with the process: report it as the process being gone.
        raise ProcessLookupError(errno.ESRCH, f"no such process: {pid}", str(pid)) from None


# --- /proc/<pid>/stat ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` Gantry uses (see proc(5) for their meaning)."""

    pid: int
    comm: str
    state: str
    ppid: int
    pgrp: int
    session: int
    tty_nr: int
    flags: int
    utime: int
    stime: int
    num_threads: int
    start_time: int
    """Clock ticks after boot at which the process started; with ``pid`` it names the
    process uniquely, since pids are reused but never with the same start time."""


def parse_stat(text: str) -> ProcStat:
    """Parse one ``/proc/<pid>/stat`` line.

    ``comm`` may hold spaces, parentheses and even newlines, so it is taken as everything
    between the first ``(`` and the *last* ``)``.
    """
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}")
    rest = text[close_paren + 1 :].split()
    if len(rest) < 20:
        raise ValueError(f"/proc/<pid>/stat line has {len(rest) + 2} fields, expected 22+")
    # rest[0] is field 3 (state) of proc(5); field n is rest[n - 3].
    return ProcStat(
        pid=int(text[:open_paren]),
        comm=text[open_paren + 1 : close_paren],
        state=rest[0],
        ppid=int(rest[1]),
        pgrp=int(rest[2]),
        session=int(rest[3]),
        tty_nr=int(rest[4]),
        flags=int(rest[6]),
        utime=int(rest[11]),
        stime=int(rest[12]),
        num_threads=int(rest[17]),
        start_time=int(rest[19]),
    )


def read_stat(pid: ProcPid = "self") -> ProcStat:
    """Read ``/proc/<pid>/stat``; ``ProcessLookupError`` when the process is gone."""
    return parse_stat(_read(pid, "stat"))


def start_time(pid: ProcPid = "self") -> int:
    """Return the start time of ``pid`` in clock ticks after boot."""
    return read_stat(pid).start_time


# --- /proc/<pid>/status ----------------------------------------------------------------------


def parse_status_fields(text: str) -> dict[str, str]:
    """Split ``/proc/<pid>/status`` into ``{key: value}`` (values stripped, as text)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


def _ids(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in value.split())


@dataclass(frozen=True)
class ProcStatus:
    """The security-relevant fields of ``/proc/<pid>/status``; everything else in ``raw``."""

    name: str
    state: str
    tgid: int
    pid: int
    ppid: int
    uids: tuple[int, ...]
    """Real, effective, saved and filesystem uid."""
    gids: tuple[int, ...]
    """Real, effective, saved and filesystem gid."""
    groups: tuple[int, ...]
    no_new_privs: bool
    seccomp: int
    """0 disabled, 1 strict, 2 filter."""
    seccomp_filters: int | None
    """Number of filters attached (Linux 5.9+), ``None`` when the kernel does not say."""
    cap_inh: frozenset[int]
    cap_prm: frozenset[int]
    cap_eff: frozenset[int]
    cap_bnd: frozenset[int]
    cap_amb: frozenset[int]
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)


def parse_status(text: str) -> ProcStatus:
    """Parse ``/proc/<pid>/status``; ``ValueError`` names a missing field."""
    fields = parse_status_fields(text)

    def get(key: str) -> str:
        try:
            return fields[key]
        except KeyError:
            raise ValueError(f"/proc/<pid>/status has no {key!r} field") from None

    def caps(key: str) -> frozenset[int]:
        return from_mask(int(get(key), 16))

    filters = fields.get("Seccomp_filters")
    return ProcStatus(
        name=get("Name"),
        state=get("State").split()[0],
        tgid=int(get("Tgid")),
        pid=int(get("Pid")),
        ppid=int(get("PPid")),
        uids=_ids(get("Uid")),
        gids=_ids(get("Gid")),
        groups=_ids(fields.get("Groups", "")),
        no_new_privs=fields.get("NoNewPrivs", "0") == "1",
        seccomp=int(fields.get("Seccomp", "0")),
        seccomp_filters=int(filters) if filters is not None else None,
        cap_inh=caps("CapInh"),
        cap_prm=caps("CapPrm"),
        cap_eff=caps("CapEff"),
        cap_bnd=caps("CapBnd"),
        cap_amb=caps("CapAmb"),
        raw=MappingProxyType(fields),
    )


def read_status(pid: ProcPid = "self") -> ProcStatus:
    """Read ``/proc/<pid>/status``; ``ProcessLookupError`` when the process is gone."""
    return parse_status(_read(pid, "status"))


# --- /proc/<pid>/mountinfo -------------------------------------------------------------------

_OCTAL_ESCAPE: Final = re.compile(r"\\([0-7]{3})")


def unescape(field_text: str) -> str:
    """Undo the kernel's octal escapes in a mountinfo field (``\\040`` is a space)."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field_text)


@dataclass(frozen=True)
class MountInfo:
    """One line of ``/proc/<pid>/mountinfo`` (proc(5)), with escapes undone."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    """The path inside the filesystem that is mounted here (not ``/`` for a bind)."""
    mount_point: str
    mount_options: tuple[str, ...]
    """Per-mount options (ro/rw, nosuid, nodev, noexec, atime)."""
    optional_fields: tuple[str, ...]
    """Propagation tags: ``shared:N``, ``master:N``, ``propagate_from:N``, ``unbindable``."""
    fstype: str
    source: str
    super_options: tuple[str, ...]
    """Per-superblock options (what the filesystem was mounted with)."""

    @property
    def read_only(self) -> bool:
        """True when this mount is read-only."""
        return "ro" in self.mount_options

    @property
    def shared_group(self) -> int | None:
        """The peer group this mount shares events with, ``None`` when not shared."""
        return self._tag("shared")

    @property
    def master_group(self) -> int | None:
        """The peer group this mount receives events from (a slave), or ``None``."""
        return self._tag("master")

    @property
    def propagation(self) -> str:
        """``shared``, ``slave``, ``unbindable`` or ``private``."""
        if self.shared_group is not None:
            return "shared"
        if self.master_group is not None:
            return "slave"
        if "unbindable" in self.optional_fields:
            return "unbindable"
        return "private"

    def _tag(self, tag: str) -> int | None:
        for optional in self.optional_fields:
            name, _sep, value = optional.partition(":")
            if name == tag and value.isdigit():
                return int(value)
        return None


def parse_mountinfo_line(line: str) -> MountInfo:
    """Parse one mountinfo line; ``ValueError`` quotes a malformed one."""
    parts = line.split(" ")
    try:
        separator = parts.index("-", 6)
        major, minor = parts[2].split(":")
        return MountInfo(
            mount_id=int(parts[0]),
            parent_id=int(parts[1]),
            major=int(major),
            minor=int(minor),
            root=unescape(parts[3]),
            mount_point=unescape(parts[4]),
            mount_options=tuple(parts[5].split(",")),
            optional_fields=tuple(parts[6:separator]),
            fstype=unescape(parts[separator + 1]),
            source=unescape(parts[separator + 2]),
            super_options=tuple(unescape(o) for o in parts[separator + 3].split(",")),
        )
    except (ValueError, IndexError):
        raise ValueError(f"malformed mountinfo line: {line!r}") from None


def parse_mountinfo(text: str) -> tuple[MountInfo, ...]:
    """Parse a whole ``mountinfo`` file, in the kernel's order (parents before children)."""
    return tuple(parse_mountinfo_line(line) for line in text.splitlines() if line.strip())


def read_mountinfo(pid: ProcPid = "self") -> tuple[MountInfo, ...]:
    """Read the mount table of ``pid``'s mount namespace."""
    return parse_mountinfo(_read(pid, "mountinfo"))


def find_mount(mounts: tuple[MountInfo, ...], mount_point: str) -> MountInfo | None:
    """Return the topmost mount at exactly ``mount_point``, ``None`` when nothing is there."""
    found = None
    for entry in mounts:
        if entry.mount_point == mount_point:
            found = entry  # later lines are mounted on top of earlier ones
    return found


# --- pidfd -----------------------------------------------------------------------------------

PIDFD_NONBLOCK: Final = os.O_NONBLOCK


def _renamed(exc: OSError, call: str, what: str) -> OSError:
    # Same class (ProcessLookupError stays one), but the message names the call.
    err = exc.errno or 0
    return type(exc)(err, f"{call}: {os.strerror(err)}", what)


def pidfd_open(pid: int, flags: int = 0) -> int:
    """Return a pidfd (close-on-exec) for ``pid``: a handle that never names a reused pid."""
    try:
        return os.pidfd_open(pid, flags)
    except OSError as exc:
        raise _renamed(exc, "pidfd_open", str(pid)) from None


def pidfd_send_signal(pidfd: int, sig: int | signal.Signals, flags: int = 0) -> None:
    """Send ``sig`` to the process behind ``pidfd``; ``ProcessLookupError`` once it exited."""
    try:
        signal.pidfd_send_signal(pidfd, int(sig), None, flags)
    except OSError as exc:
        raise _renamed(exc, "pidfd_send_signal", f"pidfd {pidfd}") from None


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """Duplicate ``target_fd`` of the process behind ``pidfd`` into ours (Linux 5.6+)."""
    return syscall("pidfd_getfd", pidfd, target_fd, 0, path=f"pidfd {pidfd} fd {target_fd}")


# --- close_range -----------------------------------------------------------------------------

CLOSE_RANGE_UNSHARE: Final = 0x2
CLOSE_RANGE_CLOEXEC: Final = 0x4
_MAX_FD: Final = 0xFFFFFFFF


def close_range(first: int, last: int = _MAX_FD, *, cloexec: bool = False) -> None:
    """Close (or, with ``cloexec``, mark close-on-exec) every fd from ``first`` to ``last``.

    Falls back to walking ``/proc/self/fd`` on kernels without close_range (before 5.9) or
    without ``CLOSE_RANGE_CLOEXEC`` (before 5.11). Closing every fd above stdio before exec
    is what keeps a leaked host fd out of a container (CVE-2024-21626).
    """
    try:
        syscall("close_range", first, last, CLOSE_RANGE_CLOEXEC if cloexec else 0)
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EINVAL) or first > last:
            raise
    close_range_fallback(first, last, cloexec=cloexec)


def close_range_fallback(first: int, last: int = _MAX_FD, *, cloexec: bool = False) -> None:
    """:func:`close_range` without the syscall: list the open fds, then act on each."""
    try:
        # The listing includes the fd listdir read it through; that one is closed again by
        # now and is skipped below as EBADF.
        fds = sorted(int(name) for name in os.listdir("/proc/self/fd"))
    except FileNotFoundError:
        # No procfs (e.g. inside a bare rootfs): try every possible number.
        limit = min(last + 1, os.sysconf("SC_OPEN_MAX"))
        fds = list(range(first, limit))
    for fd in fds:
        if first <= fd <= last:
            try:
                if cloexec:
                    os.set_inheritable(fd, False)
                else:
                    os.close(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    raise


def close_from(first: int) -> None:
    """Close every fd numbered ``first`` or above."""
    close_range(first)


def open_fds(pid: ProcPid = "self") -> tuple[int, ...]:
    """Return the open fd numbers of ``pid``.

    For this process the fd used to read the listing is left out.
    """
    listed = sorted(int(name) for name in os.listdir(proc_path(pid, "fd")))
    if pid not in ("self", "thread-self", os.getpid()):
        return tuple(listed)
    return tuple(fd for fd in listed if _is_open(fd))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
