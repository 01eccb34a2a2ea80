"""cgroupfs readers: membership (/proc/<pid>/cgroup), hierarchies (mountinfo), file formats.

Readers only. Which hierarchy to use and what to write is the runtime's business.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from gantry.linux._libc import StrPath
from gantry.linux.proc import MountInfo, ProcPid, proc_path, read_mountinfo

# cgroup v1 superblock options that are not controllers (Documentation/admin-guide/cgroup-v1).
_V1_NON_CONTROLLER_OPTIONS: Final = frozenset(
    {"rw", "ro", "xattr", "clone_children", "noprefix", "cpuset_v2_mode", "all", "none"}
)

HierarchyMode = Literal["unified", "hybrid", "legacy", "none"]


# --- /proc/<pid>/cgroup ----------------------------------------------------------------------


@dataclass(frozen=True)
class CgroupMembership:
    """One line of ``/proc/<pid>/cgroup``: a hierarchy and the process's cgroup in it."""

    hierarchy_id: int
    """0 for the cgroup v2 (unified) hierarchy."""
    controllers: tuple[str, ...]
    """v1 controllers bound to the hierarchy (``name=systemd`` for a named one); empty on v2."""
    path: str
    """The cgroup, relative to the reader's cgroup namespace root."""

    @property
    def is_v2(self) -> bool:
        """True for the unified hierarchy's line (``0::/path``)."""
        return self.hierarchy_id == 0 and not self.controllers


def parse_proc_cgroup(text: str) -> tuple[CgroupMembership, ...]:
    """Parse ``/proc/<pid>/cgroup`` (``id:controllers:path`` lines; the path may hold ``:``)."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[0].isdigit():
            raise ValueError(f"malformed /proc/<pid>/cgroup line: {line!r}")
        controllers = tuple(c for c in parts[1].split(",") if c)
        entries.append(CgroupMembership(int(parts[0]), controllers, parts[2]))
    return tuple(entries)


def read_proc_cgroup(pid: ProcPid = "self") -> tuple[CgroupMembership, ...]:
    """Read the cgroups ``pid`` belongs to."""
    return parse_proc_cgroup(proc_path(pid, "cgroup").read_text())


def v2_cgroup(entries: Iterable[CgroupMembership]) -> str | None:
    """Return the unified-hierarchy cgroup from parsed ``/proc/<pid>/cgroup``, if any."""
    for entry in entries:
        if entry.is_v2:
            return entry.path
    return None


def v1_cgroups(entries: Iterable[CgroupMembership]) -> dict[str, str]:
    """Return ``{controller: cgroup}`` for every v1 hierarchy (``name=X`` keys included)."""
    return {c: entry.path for entry in entries if not entry.is_v2 for c in entry.controllers}


# --- hierarchies from mountinfo --------------------------------------------------------------


@dataclass(frozen=True)
class CgroupMount:
    """A mounted cgroup hierarchy."""

    mount_point: str
    version: Literal[1, 2]
    controllers: frozenset[str]
    """v1: the controllers (and ``name=X``) bound to it; v2: empty (see cgroup.controllers)."""
    root: str
    """The cgroup shown at ``mount_point`` (``/`` unless a sub-cgroup or namespace is mounted)."""

    def directory(self, cgroup: str) -> Path:
        """Return the directory of ``cgroup`` (as in /proc/<pid>/cgroup) under this mount.

        ``ValueError`` when the cgroup lies outside what this mount shows.
        """
        rel = posixpath.relpath(posixpath.normpath(cgroup), posixpath.normpath(self.root))
        if rel == ".." or rel.startswith("../"):
            raise ValueError(f"cgroup {cgroup} is outside {self.mount_point} (root {self.root})")
        return Path(self.mount_point) if rel == "." else Path(self.mount_point) / rel


def _cgroup_mount(entry: MountInfo) -> CgroupMount | None:
    if entry.fstype == "cgroup2":
        return CgroupMount(entry.mount_point, 2, frozenset(), entry.root)
    if entry.fstype == "cgroup":
        controllers = frozenset(
            option
            for option in entry.super_options
            if option not in _V1_NON_CONTROLLER_OPTIONS and not option.startswith("release_agent=")
        )
        return CgroupMount(entry.mount_point, 1, controllers, entry.root)
    return None


def cgroup_mounts(mounts: Iterable[MountInfo] | None = None) -> tuple[CgroupMount, ...]:
    """Return every cgroup hierarchy mount (of ours, unless ``mounts`` is given)."""
    table = read_mountinfo() if mounts is None else mounts
    found = (_cgroup_mount(entry) for entry in table)
    return tuple(mount for mount in found if mount is not None)


def v2_mount(mounts: Iterable[CgroupMount]) -> CgroupMount | None:
    """Return the first cgroup2 mount, ``None`` when there is none."""
    return next((mount for mount in mounts if mount.version == 2), None)


def v1_mounts(mounts: Iterable[CgroupMount]) -> dict[str, CgroupMount]:
    """Return ``{controller: mount}`` for v1 hierarchies; the first mount of each wins."""
    found: dict[str, CgroupMount] = {}
    for mount in mounts:
        if mount.version == 1:
            for controller in mount.controllers:
                found.setdefault(controller, mount)
    return found


def hierarchy_mode(
    mounts: Iterable[CgroupMount], cgroup_root: str = "/sys/fs/cgroup"
) -> HierarchyMode:
    """Classify the host: ``unified`` (v2 at the root), ``hybrid`` (v1 controllers plus a v2
    mount, as systemd's /sys/fs/cgroup/unified), ``legacy`` (v1 only) or ``none``."""
    mounts = tuple(mounts)
    if any(m.version == 2 and m.mount_point == cgroup_root for m in mounts):
        return "unified"
    has_v1 = any(m.version == 1 for m in mounts)
    has_v2 = any(m.version == 2 for m in mounts)
    if has_v1 and has_v2:
        return "hybrid"
    if has_v1:
        return "legacy"
    return "unified" if has_v2 else "none"


# --- file formats ----------------------------------------------------------------------------


def read_str(path: StrPath) -> str:
    """Return a cgroup file's content without the trailing newline."""
    return Path(path).read_text().rstrip("\n")


def read_int(path: StrPath) -> int:
    """Return a cgroup file holding one integer (``memory.limit_in_bytes``, ``pids.current``)."""
    return int(read_str(path).strip())


def parse_max(text: str) -> int | None:
    """Parse a v2 limit: an integer, or ``max`` (no limit) as ``None``."""
    value = text.strip()
    return None if value == "max" else int(value)


def read_max(path: StrPath) -> int | None:
    """Read a v2 limit file (``pids.max``, ``memory.max``): ``None`` for ``max``."""
    return parse_max(read_str(path))


def parse_words(text: str) -> tuple[str, ...]:
    """Split a space-separated list file (``cgroup.controllers``, ``cgroup.subtree_control``)."""
    return tuple(text.split())


def parse_ids(text: str) -> tuple[int, ...]:
    """Parse a newline-separated id list (``cgroup.procs``, ``tasks``, ``cgroup.threads``)."""
    return tuple(int(line) for line in text.split())


def read_ids(path: StrPath) -> tuple[int, ...]:
    """Read ``cgroup.procs``/``tasks``: the pids (or tids) in a cgroup."""
    return parse_ids(read_str(path))


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse ``key value`` lines (``memory.stat``, ``cpu.stat``, ``memory.events``)."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ValueError(f"not a 'key value' line: {line!r}")
        result[parts[0]] = int(parts[1])
    return result


def read_flat_keyed(path: StrPath) -> dict[str, int]:
    """Read a flat-keyed cgroup file into ``{key: int}``."""
    return parse_flat_keyed(read_str(path))


def parse_nested_keyed(text: str) -> dict[str, dict[str, str]]:
    """Parse ``key sub=value sub=value`` lines (``io.stat``, ``io.max``, ``*.pressure``)."""
    result: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        values: dict[str, str] = {}
        for pair in parts[1:]:
            sub, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"not a 'key sub=value' line: {line!r}")
            values[sub] = value
        result[parts[0]] = values
    return result


def read_nested_keyed(path: StrPath) -> dict[str, dict[str, str]]:
    """Read a nested-keyed cgroup file."""
    return parse_nested_keyed(read_str(path))


def parse_blkio_v1(text: str) -> dict[str, dict[str, int]]:
    """Parse a v1 ``blkio.*`` statistics file (``MAJ:MIN Op value`` lines).

    Returns ``{"MAJ:MIN": {"Read": n, "Write": n, …}}``; a file with one value per device
    (``blkio.time``, ``blkio.sectors``) gives it under the key ``""``. ``Total`` is dropped.
    """
    result: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            result.setdefault(parts[0], {})[parts[1]] = int(parts[2])
        elif len(parts) == 2 and parts[0] != "Total":
            result.setdefault(parts[0], {})[""] = int(parts[1])
    return result
