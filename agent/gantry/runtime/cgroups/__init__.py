"""Cgroups: one container's cgroup, placed, frozen, killed and removed on any host layout.

:class:`Cgroup` is the small interface every driver implements:

- :class:`gantry.runtime.cgroups.v1.V1Cgroup` drives the cgroup v1 hierarchies (one directory
  per mounted hierarchy, ``name=systemd`` included);
- :class:`gantry.runtime.cgroups.v2.V2Cgroup` drives the unified (cgroup2) hierarchy;
- :class:`Hybrid` composes the two on a hybrid host, where each controller lives on the side
  that has it (see :mod:`gantry.runtime.cgroups.layout`).

:func:`open_cgroup` picks the driver for this host; :func:`detect` says what the host has;
:func:`orphans` lists what a crash may have left under Gantry's parent cgroup.

Every method takes a bounded time and then fails with a :class:`CgroupError` whose message
names the cgroup file or directory. Nothing here touches a cgroup outside the one it was
opened for, except what :meth:`Cgroup.create` must do on the way down: create missing
parents, and, only at or below the ``delegate`` cgroup it was given, copy v1
``cpuset.cpus``/``cpuset.mems`` into parents that have none and enable v2 controllers in
ancestors' ``cgroup.subtree_control``.

Resource limits (``apply``/``update``) and statistics (``stats``) are carried out per
controller on the side that has it: :mod:`.resources` plans the writes with runc's
conversions (:mod:`.convert`) and :mod:`.stats` reads. v1 device rules are
``devices.allow``/``deny`` lines; on v2 they become a BPF program (:mod:`.devices`).
"""

from __future__ import annotations

import abc
import contextlib
import errno
import logging
import os
import select
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from gantry.linux.cgroupfs import CgroupMount, parse_flat_keyed, parse_words, read_ids, read_str
from gantry.runtime.cgroups.layout import CGROUP_ROOT, Layout, Side, detect
from gantry.runtime.cgroups.path import normalize_cgroup
from gantry.runtime.spec import Device, Resources, Spec

if TYPE_CHECKING:
    from gantry.runtime.cgroups.resources import Target
    from gantry.runtime.cgroups.stats import Stats

__all__ = [
    "CGROUP_ROOT",
    "DESTROY_TIMEOUT",
    "FREEZE_TIMEOUT",
    "KILL_TIMEOUT",
    "Cgroup",
    "CgroupError",
    "FreezerState",
    "Hybrid",
    "Layout",
    "Side",
    "apply_spec",
    "detect",
    "open_cgroup",
    "orphans",
]

_log = logging.getLogger(__name__)

FreezerState = Literal["frozen", "thawed", "freezing"]

FREEZE_TIMEOUT: Final = 5.0
KILL_TIMEOUT: Final = 10.0
DESTROY_TIMEOUT: Final = 10.0

# Polling starts fast (a freeze or a kill usually settles in well under a millisecond) and
# backs off so a slow one does not spin.
_FIRST_PAUSE: Final = 0.001
_LAST_PAUSE: Final = 0.05


class CgroupError(Exception):
    """A cgroup operation failed. The message names the cgroup file or directory."""

    def __init__(self, message: str, path: Path | None = None, err: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        """The file or directory the failure is about."""
        self.errno = err
        """The kernel's error number, when the failure was one."""


class Cgroup(abc.ABC):
    """One cgroup (``path``, such as ``/gantry/<id>``) in every hierarchy its driver uses.

    ``apply``, ``update`` and ``stats`` work through :meth:`targets`, the directory and
    side of each controller, so one implementation serves v1, v2 and hybrid hosts.
    """

    path: str
    """The cgroup, as /proc/<pid>/cgroup shows it (absolute, normalised)."""

    @abc.abstractmethod
    def create(self) -> None:
        """Make the cgroup in every hierarchy (idempotent); undo a partial creation on error."""

    @abc.abstractmethod
    def add(self, pid: int) -> None:
        """Move the process ``pid`` (all its threads) into the cgroup in every hierarchy."""

    @abc.abstractmethod
    def procs(self) -> list[int]:
        """Return the pids directly in the cgroup (not in sub-cgroups), sorted."""

    @abc.abstractmethod
    def all_pids(self) -> list[int]:
        """Return the pids in the cgroup and every cgroup below it, sorted."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """True while the cgroup directory exists in at least one hierarchy it uses."""

    @abc.abstractmethod
    def paths(self) -> dict[str, Path]:
        """Return ``{controller: directory}``: where each controller's files are.

        v1 keys are the controllers of each hierarchy (``name=systemd`` for a named one);
        the key ``""`` is the unified hierarchy's directory (the ``0::`` line of
        /proc/<pid>/cgroup), and each v2-side controller maps to it too.
        """

    @abc.abstractmethod
    def can_freeze(self) -> bool:
        """True when this driver has a freezer to use."""

    @abc.abstractmethod
    def freeze(self, timeout: float = FREEZE_TIMEOUT) -> None:
        """Freeze every process in the cgroup; wait until the kernel says they are frozen.

        On timeout the cgroup is thawed again and :class:`CgroupError` raised.
        """

    @abc.abstractmethod
    def thaw(self, timeout: float = FREEZE_TIMEOUT) -> None:
        """Let the cgroup's processes run again."""

    @abc.abstractmethod
    def state(self) -> FreezerState:
        """Return ``frozen``, ``freezing`` or ``thawed`` (``thawed`` without a freezer)."""

    @abc.abstractmethod
    def kill_all(self, sig: int = signal.SIGKILL, timeout: float = KILL_TIMEOUT) -> None:
        """Send ``sig`` to every process in the cgroup and below.

        With ``SIGKILL`` this returns once the cgroup is empty (``CgroupError`` after
        ``timeout``); any other signal is sent once to each process, with the cgroup frozen
        meanwhile so a fork cannot slip past, and the freezer state is left as it was.
        """

    @abc.abstractmethod
    def destroy(self, timeout: float = DESTROY_TIMEOUT) -> None:
        """Wait for the cgroup to be empty, then remove it (sub-cgroups first) everywhere.

        Does nothing for a cgroup that does not exist. ``CgroupError`` naming the path
        when processes are still there, or a directory cannot be removed, after ``timeout``.
        """

    @abc.abstractmethod
    def targets(self) -> dict[str, Target]:
        """Return ``{controller: Target(side, directory)}`` for every controller in use.

        ``devices`` is always there on v2 (a BPF hook, not a controller file); the key
        ``""`` is the v2 directory for core files (``cgroup.*``).
        """

    def apply(
        self,
        resources: Resources,
        *,
        devices: Sequence[Device] = (),
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> list[str]:
        """Apply the spec's ``linux.resources`` (and allow its ``linux.devices``).

        Every value is checked against what the host has before anything is written:
        :class:`~gantry.runtime.cgroups.resources.ResourceError` lists each field that
        cannot be honoured. Returns the warnings (values ignored, as runc ignores them),
        which are also logged.
        """
        from gantry.runtime.cgroups.devices import attach_program
        from gantry.runtime.cgroups.resources import execute, plan

        work = plan(resources, self.targets(), devices=devices)
        for warning in work.warnings:
            (log or _log).warning("cgroup %s: %s", self.path, warning)
        execute(work, attach=attach_program)
        return list(work.warnings)

    def update(self, resources: Resources) -> list[str]:
        """Change the limits of a cgroup in use, in place (``gantry-runtime update``).

        Only what ``resources`` sets is written; the rest stays as it is.
        """
        return self.apply(resources)

    def stats(self) -> Stats:
        """Read the cgroup's resource statistics."""
        from gantry.runtime.cgroups.stats import read_stats

        if not self.exists():
            raise CgroupError(f"cgroup {self.path} does not exist")
        try:
            return read_stats(self.targets())
        except FileNotFoundError as exc:
            # Removed while being read: the container is gone.
            raise CgroupError(f"cgroup {self.path} is gone: {exc.filename}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    # --- shared by the drivers -----------------------------------------------------------

    def _signal_rounds(self, sig: int, timeout: float) -> None:
        """Freeze, signal every member, thaw; with SIGKILL repeat until empty.

        Freezing first means a process that forks between our reading cgroup.procs and our
        signal cannot leave a child unsignalled; with SIGKILL the rounds repeat anyway.
        """
        deadline = time.monotonic() + timeout
        pause = _FIRST_PAUSE
        while True:
            if not self.all_pids():
                return
            if sig == signal.SIGKILL and time.monotonic() >= deadline:
                raise CgroupError(
                    f"cgroup {self.path}: processes {self.all_pids()} are still alive "
                    f"{timeout:g}s after SIGKILL",
                    _first(self.paths().values()),
                )
            was_frozen = self._frozen_now()
            froze = False
            if self.can_freeze() and not was_frozen:
                try:
                    self.freeze(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
                    froze = True
                except CgroupError as exc:
                    _log.warning("%s: signalling unfrozen: %s", self, exc)
            for pid in self.all_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            # A v1-frozen task cannot act on SIGKILL until thawed; otherwise leave the
            # freezer as the caller had it.
            if froze or (was_frozen and sig == signal.SIGKILL):
                self.thaw(timeout=max(0.1, deadline - time.monotonic()))
            if sig != signal.SIGKILL:
                return
            time.sleep(pause)
            pause = min(pause * 2, _LAST_PAUSE)

    def _frozen_now(self) -> bool:
        if not self.can_freeze():
            return False
        try:
            return self.state() == "frozen"
        except CgroupError:
            return False  # the freezer side is gone already: nothing there to restore


class Hybrid(Cgroup):
    """A cgroup on a hybrid host: the v1 hierarchies and the unified one together.

    Processes join both sides. The freezer is the v1 one when mounted (it is what holds
    the processes' freezer state there), else v2's ``cgroup.freeze``. ``kill_all`` with
    SIGKILL uses v2's ``cgroup.kill`` when present, then mops up on the v1 side (v1 first
    when its freezer holds the processes).
    """

    def __init__(self, v1: Cgroup, v2: Cgroup) -> None:
        if v1.path != v2.path:
            raise ValueError(f"hybrid sides disagree: {v1.path!r} and {v2.path!r}")
        self.path = v1.path
        self.v1 = v1
        self.v2 = v2

    def create(self) -> None:
        existed = self.v1.exists()
        self.v1.create()
        try:
            self.v2.create()
        except BaseException:
            if not existed:
                _quietly_destroy(self.v1)
            raise

    def add(self, pid: int) -> None:
        self.v1.add(pid)
        self.v2.add(pid)

    def procs(self) -> list[int]:
        return sorted(set(self.v1.procs()) | set(self.v2.procs()))

    def all_pids(self) -> list[int]:
        return sorted(set(self.v1.all_pids()) | set(self.v2.all_pids()))

    def exists(self) -> bool:
        return self.v1.exists() or self.v2.exists()

    def paths(self) -> dict[str, Path]:
        found = self.v2.paths()
        found.update(self.v1.paths())
        return found

    def targets(self) -> dict[str, Target]:
        # A controller bound to a v1 hierarchy is driven there; devices too, when v1 has
        # them (the kernel checks the v1 rules and any v2 program both).
        found = self.v2.targets()
        found.update(self.v1.targets())
        return found

    def _freezer(self) -> Cgroup:
        return self.v1 if self.v1.can_freeze() else self.v2

    def can_freeze(self) -> bool:
        return self._freezer().can_freeze()

    def freeze(self, timeout: float = FREEZE_TIMEOUT) -> None:
        self._freezer().freeze(timeout)

    def thaw(self, timeout: float = FREEZE_TIMEOUT) -> None:
        self._freezer().thaw(timeout)

    def state(self) -> FreezerState:
        return self._freezer().state()

    def kill_all(self, sig: int = signal.SIGKILL, timeout: float = KILL_TIMEOUT) -> None:
        if sig != signal.SIGKILL:
            self._signal_rounds(sig, timeout)
            return
        deadline = time.monotonic() + timeout
        # A task stopped by the v1 freezer does not die of SIGKILL until thawed, so
        # cgroup.kill alone would wait out the timeout: the v1 rounds signal, then thaw.
        first, second = (self.v1, self.v2) if self._v1_held() else (self.v2, self.v1)
        first.kill_all(sig, timeout)
        second.kill_all(sig, max(0.0, deadline - time.monotonic()))

    def _v1_held(self) -> bool:
        if not self.v1.can_freeze():
            return False
        try:
            return self.v1.state() != "thawed"
        except CgroupError:
            return False

    def destroy(self, timeout: float = DESTROY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        self.v1.destroy(timeout)
        self.v2.destroy(max(0.0, deadline - time.monotonic()))


def open_cgroup(path: str, layout: Layout | None = None, *, delegate: str = "/") -> Cgroup:
    """Return the driver for the cgroup ``path`` on this host (or on ``layout``'s host).

    ``delegate`` is the top of the subtree Gantry may change while creating (by default
    the hierarchy root, as runc): ancestors above it are used as they are.
    Nothing is created until :meth:`Cgroup.create`.
    """
    # The drivers subclass Cgroup, so they can only be imported once it is defined.
    from gantry.runtime.cgroups.v1 import V1Cgroup
    from gantry.runtime.cgroups.v2 import V2Cgroup

    found = detect() if layout is None else layout
    if found.mode == "unified":
        return V2Cgroup(found, path, delegate=delegate)
    if found.mode == "legacy":
        return V1Cgroup(found, path, delegate=delegate)
    if found.mode == "hybrid":
        v1 = V1Cgroup(found, path, delegate=delegate)
        if found.v2_mount is None:
            return v1
        return Hybrid(v1, V2Cgroup(found, path, delegate=delegate))
    raise CgroupError("no cgroup hierarchy is mounted (neither cgroup v1 nor cgroup2)")


def apply_spec(
    cgroup: Cgroup,
    spec: Spec,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> list[str]:
    """Apply ``spec``'s ``linux.resources`` (allowing its ``linux.devices``) to ``cgroup``.

    Nothing to apply without ``linux.resources``. Returns the warnings, also logged.
    """
    linux = spec.linux
    if linux is None or linux.resources is None:
        return []
    return cgroup.apply(linux.resources, devices=linux.devices, log=log)


def orphans(parent: str, keep: Iterable[str], layout: Layout | None = None) -> list[Path]:
    """Return the cgroup directories right under ``parent`` whose name is not in ``keep``.

    Every hierarchy of the layout is looked at; only ``parent``'s immediate sub-cgroups
    are listed (one directory per hierarchy each), nothing elsewhere. A container placed
    by an explicit ``linux.cgroupsPath`` outside the parent is not found here.
    """
    found = detect() if layout is None else layout
    wanted = normalize_cgroup(parent)
    names = set(keep)
    mounts: list[CgroupMount] = list(found.v1_hierarchies)
    if found.v2_mount is not None:
        mounts.append(found.v2_mount)
    result: list[Path] = []
    for mount in mounts:
        try:
            top = mount.directory(wanted)
        except ValueError:
            continue  # this mount does not show the parent
        try:
            entries = list(os.scandir(top))
        except FileNotFoundError:
            continue
        result.extend(
            Path(entry.path)
            for entry in entries
            if entry.is_dir(follow_symlinks=False) and entry.name not in names
        )
    return sorted(result)


# --- file helpers for the drivers -------------------------------------------------------------


def _within(cgroup: str, top: str) -> bool:
    """True when ``cgroup`` is ``top`` or below it."""
    return top == "/" or cgroup == top or cgroup.startswith(top + "/")


def _lineage(cgroup: str) -> list[str]:
    """Return the cgroups from the root's child down to ``cgroup``: ``/a``, ``/a/b``, …."""
    parts = cgroup.strip("/").split("/")
    return ["/" + "/".join(parts[: index + 1]) for index in range(len(parts))]


def _check_delegate(cgroup: str, delegate: str) -> str:
    top = delegate if delegate == "/" else normalize_cgroup(delegate)
    if not _within(cgroup, top):
        raise ValueError(f"cgroup {cgroup} is not at or below the delegated cgroup {top}")
    return top


def _make_dir(directory: Path) -> bool:
    """Create one cgroup directory (its parent must exist); False when it was there."""
    try:
        directory.mkdir()
    except FileExistsError:
        return False
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CgroupError(
            f"cannot create cgroup {directory}: {reason}", directory, exc.errno
        ) from exc
    return True


def _undo_dirs(created: list[Path]) -> None:
    """Remove directories made by a failed creation, deepest first, as far as possible."""
    for directory in reversed(created):
        try:
            os.rmdir(directory)
        except OSError as exc:
            _log.warning("could not remove %s after a failed creation: %s", directory, exc)


def _read_words_checked(path: Path) -> tuple[str, ...]:
    try:
        return parse_words(read_str(path))
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CgroupError(f"cannot read {path}: {reason}", path, exc.errno) from exc


def _first(paths: Iterable[Path]) -> Path | None:
    return next(iter(paths), None)


def _write(path: Path, text: str) -> None:
    """Write ``text`` in one write(2), as cgroupfs takes one value per write."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _write_checked(path: Path, text: str, doing: str) -> None:
    """:func:`_write`, with a failure turned into a :class:`CgroupError` saying what for."""
    try:
        _write(path, text)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CgroupError(
            f"{doing}: writing {text!r} to {path}: {reason}", path, exc.errno
        ) from exc


def _ids_if_present(path: Path) -> list[int]:
    try:
        return list(read_ids(path))
    except FileNotFoundError:
        return []  # the cgroup was removed meanwhile: it holds nothing


def _cgroup_dirs(top: Path) -> Iterator[Path]:
    """Yield ``top`` and every cgroup below it, deepest first."""
    for dirpath, _dirnames, _filenames in os.walk(top, topdown=False):
        yield Path(dirpath)


def _pids_below(top: Path) -> set[int]:
    found: set[int] = set()
    for directory in _cgroup_dirs(top):
        found.update(_ids_if_present(directory / "cgroup.procs"))
    return found


def _wait_until(check: Callable[[], bool], deadline: float) -> bool:
    """Poll ``check`` until it holds (True) or ``deadline`` passes (False)."""
    pause = _FIRST_PAUSE
    while True:
        if check():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, _LAST_PAUSE)


def _wait_event(events: Path, key: str, value: int, deadline: float) -> bool:
    """Wait until ``key`` in the v2 ``cgroup.events`` file reads ``value``.

    The kernel signals a change of that file as POLLPRI; the poll is still bounded, so a
    missed notification costs one pause, never the whole wait.
    """
    try:
        fd = os.open(events, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return value == 0  # removed: nothing is populated or frozen any more
    try:
        poller = select.poll()
        poller.register(fd, select.POLLPRI)
        while True:
            current = parse_flat_keyed(os.pread(fd, 4096, 0).decode())
            if current.get(key) == value:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            poller.poll(max(1, int(min(remaining, 0.1) * 1000)))
    finally:
        os.close(fd)


def _rmdir_tree(top: Path, deadline: float) -> None:
    """Remove ``top`` and every cgroup below it, deepest first; retry EBUSY until deadline."""
    if not top.exists():
        return
    for directory in _cgroup_dirs(top):
        pause = _FIRST_PAUSE
        while True:
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                # EBUSY right after the last task left: the kernel is still tearing it down.
                if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                    reason = os.strerror(exc.errno) if exc.errno else str(exc)
                    raise CgroupError(
                        f"cannot remove cgroup {directory}: {reason}", directory, exc.errno
                    ) from exc
                time.sleep(pause)
                pause = min(pause * 2, _LAST_PAUSE)


def _quietly_destroy(cgroup: Cgroup) -> None:
    try:
        cgroup.destroy(timeout=1.0)
    except CgroupError as exc:
        _log.warning("%s: could not undo a partial creation: %s", cgroup, exc)
