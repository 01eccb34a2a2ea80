"""The cgroup v2 driver: one directory in the unified hierarchy.

A controller is usable in a cgroup only when every ancestor enables it for its children in
``cgroup.subtree_control``, so :meth:`V2Cgroup.create` enables the wanted controllers on the
way down (only those the ancestor itself has, and only at or below the delegated cgroup).
The kernel's "no internal processes" rule is why the leaf itself enables nothing: a
non-root cgroup that holds processes cannot hand controllers to children.

The v2 files do what v1 needs loops for: ``cgroup.freeze`` plus the ``frozen`` key of
``cgroup.events`` (Linux 5.2), ``cgroup.kill`` (5.14), and ``populated`` for emptiness,
all waited on with poll(2) rather than re-reading ``cgroup.procs``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable
from pathlib import Path

from gantry.linux.cgroupfs import parse_flat_keyed, read_str
from gantry.runtime.cgroups import (
    DESTROY_TIMEOUT,
    FREEZE_TIMEOUT,
    KILL_TIMEOUT,
    Cgroup,
    CgroupError,
    FreezerState,
    _check_delegate,
    _ids_if_present,
    _lineage,
    _make_dir,
    _pids_below,
    _read_words_checked,
    _rmdir_tree,
    _undo_dirs,
    _wait_event,
    _within,
    _write_checked,
)
from gantry.runtime.cgroups.layout import Layout
from gantry.runtime.cgroups.path import normalize_cgroup
from gantry.runtime.cgroups.resources import Target

__all__ = ["V2Cgroup"]


class V2Cgroup(Cgroup):
    """A cgroup in the unified hierarchy of ``layout``.

    ``controllers``: what to enable for it on the way down; by default every controller
    the layout drives through v2 (all of them on a unified host). ``delegate``: the top
    of the subtree whose ``cgroup.subtree_control`` this driver may change; the hierarchy
    root by default, as runc. Ancestors above it are used as the host set them up.
    """

    def __init__(
        self,
        layout: Layout,
        path: str,
        *,
        delegate: str = "/",
        controllers: Iterable[str] | None = None,
    ) -> None:
        self.path = normalize_cgroup(path)
        self._delegate = _check_delegate(self.path, delegate)
        mount = layout.v2_mount
        if mount is None:
            raise CgroupError("no cgroup2 hierarchy is mounted")
        self._mount = mount
        try:
            self._dir = mount.directory(self.path)
        except ValueError as exc:
            raise CgroupError(str(exc), Path(mount.mount_point)) from None
        wanted = layout.v2_controllers if controllers is None else controllers
        self.controllers: tuple[str, ...] = tuple(dict.fromkeys(wanted))
        """The controllers :meth:`create` enables for this cgroup where available."""

    @property
    def directory(self) -> Path:
        """The cgroup's directory under the unified mount."""
        return self._dir

    # --- placement -----------------------------------------------------------------------

    def create(self) -> None:
        created: list[Path] = []
        try:
            for cgroup in ["/", *_lineage(self.path)]:
                try:
                    directory = self._mount.directory(cgroup)
                except ValueError:
                    continue  # above what the mount shows
                if cgroup != "/" and _make_dir(directory):
                    created.append(directory)
                if cgroup != self.path and _within(cgroup, self._delegate):
                    self._enable_for_children(directory)
        except BaseException:
            _undo_dirs(created)
            raise

    def _enable_for_children(self, directory: Path) -> None:
        available = _read_words_checked(directory / "cgroup.controllers")
        enabled = _read_words_checked(directory / "cgroup.subtree_control")
        missing = [c for c in self.controllers if c in available and c not in enabled]
        if missing:
            _write_checked(
                directory / "cgroup.subtree_control",
                " ".join(f"+{c}" for c in missing),
                f"enabling controllers for cgroup {self.path}",
            )

    def add(self, pid: int) -> None:
        _write_checked(
            self._dir / "cgroup.procs", str(pid), f"moving pid {pid} into cgroup {self.path}"
        )

    def procs(self) -> list[int]:
        return sorted(_ids_if_present(self._dir / "cgroup.procs"))

    def all_pids(self) -> list[int]:
        return sorted(_pids_below(self._dir))

    def exists(self) -> bool:
        return self._dir.is_dir()

    def paths(self) -> dict[str, Path]:
        return {"": self._dir} | {c: self._dir for c in sorted(self.controllers)}

    def targets(self) -> dict[str, Target]:
        # Device access on v2 is a BPF hook of any cgroup, not a controller to enable.
        return {key: Target("v2", directory) for key, directory in self.paths().items()} | {
            "devices": Target("v2", self._dir)
        }

    # --- freezer -------------------------------------------------------------------------

    def can_freeze(self) -> bool:
        return (self._dir / "cgroup.freeze").exists()

    def _events(self) -> dict[str, int]:
        events = self._dir / "cgroup.events"
        try:
            return parse_flat_keyed(read_str(events))
        except FileNotFoundError:
            raise CgroupError(f"cgroup {self.path} does not exist ({self._dir})", events) from None

    def freeze(self, timeout: float = FREEZE_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        freeze_file = self._dir / "cgroup.freeze"
        _write_checked(freeze_file, "1", f"freezing cgroup {self.path}")
        if not _wait_event(self._dir / "cgroup.events", "frozen", 1, deadline):
            _write_checked(freeze_file, "0", f"thawing cgroup {self.path} again")
            raise CgroupError(
                f"cannot freeze cgroup {self.path}: {self._dir / 'cgroup.events'} did not "
                f"report 'frozen 1' within {timeout:g}s; thawed it again",
                freeze_file,
            )

    def thaw(self, timeout: float = FREEZE_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        _write_checked(self._dir / "cgroup.freeze", "0", f"thawing cgroup {self.path}")
        if not _wait_event(self._dir / "cgroup.events", "frozen", 0, deadline):
            raise CgroupError(
                f"cannot thaw cgroup {self.path}: still frozen after {timeout:g}s "
                "(is a parent frozen?)",
                self._dir / "cgroup.events",
            )

    def state(self) -> FreezerState:
        events = self._events()
        if events.get("frozen") == 1:
            return "frozen"
        try:
            wanted = read_str(self._dir / "cgroup.freeze").strip()
        except FileNotFoundError:
            return "thawed"  # a kernel without the v2 freezer
        return "freezing" if wanted == "1" else "thawed"

    # --- ending --------------------------------------------------------------------------

    def kill_all(self, sig: int = signal.SIGKILL, timeout: float = KILL_TIMEOUT) -> None:
        if not self.exists():
            return
        kill_file = self._dir / "cgroup.kill"
        if sig != signal.SIGKILL or not kill_file.exists():
            self._signal_rounds(sig, timeout)
            return
        deadline = time.monotonic() + timeout
        # One write kills the whole subtree, forks in flight included: no freeze, no loop.
        _write_checked(kill_file, "1", f"killing cgroup {self.path}")
        if not _wait_event(self._dir / "cgroup.events", "populated", 0, deadline):
            raise CgroupError(
                f"cgroup {self.path}: processes {self.all_pids()} are still alive "
                f"{timeout:g}s after cgroup.kill",
                kill_file,
            )

    def destroy(self, timeout: float = DESTROY_TIMEOUT) -> None:
        if not self.exists():
            return
        deadline = time.monotonic() + timeout
        if not _wait_event(self._dir / "cgroup.events", "populated", 0, deadline):
            raise CgroupError(
                f"cannot remove cgroup {self.path}: processes {self.all_pids()} are still "
                f"in it after {timeout:g}s",
                self._dir,
            )
        _rmdir_tree(self._dir, deadline)
