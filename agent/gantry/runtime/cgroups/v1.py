"""The cgroup v1 driver: one directory per mounted hierarchy, ``name=systemd`` included.

A process joins each hierarchy separately (``cgroup.procs`` of each). Two v1 quirks shape
the code: a new cpuset cgroup starts with empty ``cpuset.cpus`` and ``cpuset.mems`` and
refuses tasks until they are filled (runc copies them down from the parent, as here); and
the v1 freezer passes through ``FREEZING`` before ``FROZEN``, possibly for long when a task
is in a state the freezer must wait out.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Final

from gantry.linux.cgroupfs import CgroupMount, read_str
from gantry.runtime.cgroups import (
    _FIRST_PAUSE,
    _LAST_PAUSE,
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
    _rmdir_tree,
    _undo_dirs,
    _wait_until,
    _within,
    _write,
    _write_checked,
)
from gantry.runtime.cgroups.layout import Layout
from gantry.runtime.cgroups.path import normalize_cgroup
from gantry.runtime.cgroups.resources import Target

__all__ = ["V1Cgroup"]

_STATES: Final[dict[str, FreezerState]] = {
    "FROZEN": "frozen",
    "FREEZING": "freezing",
    "THAWED": "thawed",
}


class V1Cgroup(Cgroup):
    """A cgroup in every mounted v1 hierarchy of ``layout``.

    ``delegate``: the top of the subtree this driver may change while creating (parents
    missing cpuset values get them only at or below it); the hierarchy root by default.
    """

    def __init__(self, layout: Layout, path: str, *, delegate: str = "/") -> None:
        self.path = normalize_cgroup(path)
        self._delegate = _check_delegate(self.path, delegate)
        self._mounts = dict(layout.v1_mounts)
        if not self._mounts:
            raise CgroupError("no cgroup v1 hierarchy is mounted")
        self._hierarchies = {mount.mount_point: mount for mount in layout.v1_hierarchies}
        self._dirs: dict[str, Path] = {}
        for point, mount in self._hierarchies.items():
            try:
                self._dirs[point] = mount.directory(self.path)
            except ValueError as exc:
                raise CgroupError(str(exc), Path(point)) from None

    # --- placement -----------------------------------------------------------------------

    def create(self) -> None:
        created: list[Path] = []
        try:
            for mount in self._hierarchies.values():
                for cgroup in _lineage(self.path):
                    directory = _shown(mount, cgroup)
                    if directory is not None and _make_dir(directory):
                        created.append(directory)
            self._fill_cpuset()
        except BaseException:
            _undo_dirs(created)
            raise

    def _fill_cpuset(self) -> None:
        """Give each cpuset cgroup on the way down its parent's cpus and mems if it has none.

        A cpuset cgroup with no cpus or mems accepts no task and no child with any, so
        without this the first write to cgroup.procs fails with ENOSPC.
        """
        mount = self._mounts.get("cpuset")
        if mount is None:
            return
        for cgroup in _lineage(self.path):
            if not _within(cgroup, self._delegate):
                continue
            directory = _shown(mount, cgroup)
            if directory is None:
                continue
            for name in ("cpus", "mems"):
                _copy_from_parent(_cpuset_file(directory, name), self.path)

    def add(self, pid: int) -> None:
        for directory in self._dirs.values():
            _write_checked(
                directory / "cgroup.procs", str(pid), f"moving pid {pid} into cgroup {self.path}"
            )

    def procs(self) -> list[int]:
        found: set[int] = set()
        for directory in self._dirs.values():
            found.update(_ids_if_present(directory / "cgroup.procs"))
        return sorted(found)

    def all_pids(self) -> list[int]:
        found: set[int] = set()
        for directory in self._dirs.values():
            found.update(_pids_below(directory))
        return sorted(found)

    def exists(self) -> bool:
        return any(directory.is_dir() for directory in self._dirs.values())

    def paths(self) -> dict[str, Path]:
        return {key: self._dirs[mount.mount_point] for key, mount in sorted(self._mounts.items())}

    def targets(self) -> dict[str, Target]:
        return {
            key: Target("v1", directory)
            for key, directory in self.paths().items()
            if not key.startswith("name=")
        }

    # --- freezer -------------------------------------------------------------------------

    def can_freeze(self) -> bool:
        return "freezer" in self._mounts

    def _state_file(self) -> Path:
        mount: CgroupMount | None = self._mounts.get("freezer")
        if mount is None:
            raise CgroupError(f"cgroup {self.path}: no v1 freezer hierarchy is mounted")
        return self._dirs[mount.mount_point] / "freezer.state"

    def _read_state(self, state_file: Path) -> str:
        try:
            return read_str(state_file).strip()
        except FileNotFoundError:
            raise CgroupError(
                f"cgroup {self.path} does not exist ({state_file.parent})", state_file
            ) from None

    def freeze(self, timeout: float = FREEZE_TIMEOUT) -> None:
        state_file = self._state_file()
        deadline = time.monotonic() + timeout
        doing = f"freezing cgroup {self.path}"
        _write_checked(state_file, "FROZEN", doing)
        pause = _FIRST_PAUSE
        while True:
            current = self._read_state(state_file)
            if current == "FROZEN":
                return
            if time.monotonic() >= deadline:
                _write_checked(state_file, "THAWED", f"thawing cgroup {self.path} again")
                raise CgroupError(
                    f"cannot freeze cgroup {self.path}: {state_file} still reads {current} "
                    f"after {timeout:g}s; thawed it again",
                    state_file,
                )
            time.sleep(pause)
            pause = min(pause * 2, _LAST_PAUSE)
            # Writing FROZEN again makes the kernel retry the tasks it could not stop on
            # the last pass (one that was forking or in an uninterruptible sleep).
            _write(state_file, "FROZEN")

    def thaw(self, timeout: float = FREEZE_TIMEOUT) -> None:
        state_file = self._state_file()
        _write_checked(state_file, "THAWED", f"thawing cgroup {self.path}")
        deadline = time.monotonic() + timeout
        if not _wait_until(lambda: self._read_state(state_file) == "THAWED", deadline):
            raise CgroupError(
                f"cannot thaw cgroup {self.path}: {state_file} still reads "
                f"{self._read_state(state_file)} after {timeout:g}s (is a parent frozen?)",
                state_file,
            )

    def state(self) -> FreezerState:
        if not self.can_freeze():
            return "thawed"
        state_file = self._state_file()
        current = self._read_state(state_file)
        try:
            return _STATES[current]
        except KeyError:
            raise CgroupError(f"unexpected freezer state {current!r} in {state_file}") from None

    # --- ending --------------------------------------------------------------------------

    def kill_all(self, sig: int = signal.SIGKILL, timeout: float = KILL_TIMEOUT) -> None:
        self._signal_rounds(sig, timeout)

    def destroy(self, timeout: float = DESTROY_TIMEOUT) -> None:
        if not self.exists():
            return
        deadline = time.monotonic() + timeout
        if not _wait_until(lambda: not self.all_pids(), deadline):
            raise CgroupError(
                f"cannot remove cgroup {self.path}: processes {self.all_pids()} are still "
                f"in it after {timeout:g}s",
                next(iter(self._dirs.values())),
            )
        for directory in self._dirs.values():
            _rmdir_tree(directory, deadline)


def _shown(mount: CgroupMount, cgroup: str) -> Path | None:
    """The directory of ``cgroup`` under ``mount``; ``None`` above what the mount shows."""
    try:
        return mount.directory(cgroup)
    except ValueError:
        return None


def _cpuset_file(directory: Path, name: str) -> Path:
    prefixed = directory / f"cpuset.{name}"
    # A hierarchy mounted with -o noprefix names the files without "cpuset.".
    return prefixed if prefixed.exists() or not (directory / name).exists() else directory / name


def _copy_from_parent(file: Path, cgroup: str) -> None:
    try:
        if read_str(file).strip():
            return
        value = read_str(file.parent.parent / file.name).strip()
    except OSError as exc:
        raise CgroupError(f"cannot read {file} or its parent's: {exc}", file, exc.errno) from exc
    _write_checked(file, value, f"copying cpuset values down to cgroup {cgroup}")
