"""Which cgroup hierarchies this host has, and through which side each controller is driven.

Three layouts exist in the wild:

- ``unified``: one cgroup2 hierarchy at /sys/fs/cgroup; every controller lives there.
- ``legacy``: cgroup v1 only, one hierarchy per controller (or per group of co-mounted
  controllers, such as ``cpu,cpuacct``), often a ``name=systemd`` one without controllers.
- ``hybrid``: v1 hierarchies plus a cgroup2 mount (systemd's /sys/fs/cgroup/unified). A
  controller can be bound to one hierarchy only, so each lives on exactly one side: the v1
  side if a v1 hierarchy has it, else the v2 side if the v2 root lists it in
  ``cgroup.controllers``.

Detection reads the mount table and the v2 root's ``cgroup.controllers``; nothing is
written. Both inputs can be given, so a crafted tree in a temporary directory stands in for
a host.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

from gantry.linux.cgroupfs import (
    CgroupMount,
    HierarchyMode,
    cgroup_mounts,
    hierarchy_mode,
    parse_words,
    read_str,
    v1_mounts,
    v2_mount,
)

__all__ = ["CGROUP_ROOT", "Layout", "Side", "detect"]

CGROUP_ROOT: Final = "/sys/fs/cgroup"

Side = Literal["v1", "v2"]
"""The hierarchy version a controller is driven through."""


def _no_mounts() -> Mapping[str, CgroupMount]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Layout:
    """The cgroup hierarchies of a host, as Gantry drives them."""

    mode: HierarchyMode
    v1_mounts: Mapping[str, CgroupMount] = field(default_factory=_no_mounts)
    """``{controller: mount}`` of the v1 hierarchies (``name=X`` keys for named ones).
    Empty in ``unified`` mode: stray v1 mounts there are not Gantry's to drive."""
    v2_mount: CgroupMount | None = None
    v2_available: tuple[str, ...] = ()
    """``cgroup.controllers`` of the v2 mount's root: what the v2 side could offer."""

    @property
    def v1_controllers(self) -> tuple[str, ...]:
        """The real controllers driven through v1 (named hierarchies left out), sorted."""
        return tuple(sorted(key for key in self.v1_mounts if not key.startswith("name=")))

    @property
    def v2_controllers(self) -> tuple[str, ...]:
        """The controllers driven through v2: available there and not bound to v1, sorted."""
        return tuple(sorted(c for c in self.v2_available if c not in self.v1_mounts))

    @property
    def v1_hierarchies(self) -> tuple[CgroupMount, ...]:
        """Each mounted v1 hierarchy once (co-mounted controllers share one)."""
        unique: dict[str, CgroupMount] = {}
        for mount in self.v1_mounts.values():
            unique.setdefault(mount.mount_point, mount)
        return tuple(unique[point] for point in sorted(unique))

    def side(self, controller: str) -> Side | None:
        """Return the side that drives ``controller``, ``None`` when no side has it."""
        if controller in self.v1_mounts:
            return "v1"
        if controller in self.v2_available:
            return "v2"
        return None

    def controllers(self) -> dict[str, Side]:
        """Return ``{controller: side}`` for every usable controller."""
        found: dict[str, Side] = dict.fromkeys(self.v2_controllers, "v2")
        found.update(dict.fromkeys(self.v1_controllers, "v1"))
        return dict(sorted(found.items()))


def detect(
    mounts: Iterable[CgroupMount] | None = None, *, cgroup_root: str = CGROUP_ROOT
) -> Layout:
    """Detect the layout from ``mounts`` (this process's mount table by default).

    ``cgroup_root`` is where a unified hierarchy would be mounted; a crafted tree passes
    its own. The v2 side's controllers are read from ``cgroup.controllers`` at the v2
    mount point.
    """
    table = cgroup_mounts() if mounts is None else tuple(mounts)
    mode = hierarchy_mode(table, cgroup_root)
    unified = v2_mount(table)
    available: tuple[str, ...] = ()
    if unified is not None:
        controllers_file = Path(unified.mount_point) / "cgroup.controllers"
        try:
            available = parse_words(read_str(controllers_file))
        except FileNotFoundError:
            available = ()  # a cgroup2 mount of a kernel older than 4.5: no controllers
    v1: Mapping[str, CgroupMount] = _no_mounts()
    if mode in ("hybrid", "legacy"):
        v1 = MappingProxyType(v1_mounts(table))
    return Layout(mode=mode, v1_mounts=v1, v2_mount=unified, v2_available=available)
