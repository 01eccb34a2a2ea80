"""The engine: desired-state containers on top of the container core.

Layout under ``root`` (see ARCHITECTURE.md)::

    state.db              SQLite (WAL): containers and events
    containers/<id>/      the bundle: config.json, container.log
    runtime/<id>/         the runtime's state directory (state.json, exit.json, the shim)
    tmp/                  staging; emptied at start-up

A container the engine calls ``created`` exists as a database row and a bundle; it gets a
runtime container (a supervised init) when it starts, and loses it again once it has
stopped and its exit is recorded. The runtime's shim, not the agent, is the parent of
every container: killing the agent changes nothing for them, and ``open`` re-adopts them.

Concurrency: every verb on one container holds that container's lock (by name), so
requests on one container serialise and requests on different containers run in parallel.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import logging
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from gantry.engine import blkio, execs, networking, sessions
from gantry.engine import bundle as bundles
from gantry.engine import images as engine_images
from gantry.engine import spec as specs
from gantry.engine.errors import Conflict, EngineError, Invalid, NotFound, Unavailable
from gantry.engine.events import EventLog
from gantry.engine.health import NO_HEALTH, HealthChecker
from gantry.engine.launch import Launching
from gantry.engine.monitor import ExitMonitor
from gantry.engine.operations import Operations
from gantry.engine.plan import plan
from gantry.engine.store import ContainerRow, Store
from gantry.images.registry import RegistryOptions
from gantry.images.service import ImageService
from gantry.network import NetworkConfig
from gantry.runtime import state as st
from gantry.runtime import supervisor, tini
from gantry.runtime.cgroups import CgroupError, layout, open_cgroup
from gantry.runtime.cgroups.resources import ResourceError
from gantry.runtime.process import ContainerInitError
from gantry.runtime.shim import LogOptions
from gantry.runtime.spec import SpecError

__all__ = ["RUNNING_STATES", "Engine"]

_log = logging.getLogger(__name__)

RUNNING_STATES: Final = ("running", "paused")
BACKOFF_FIRST: Final = 0.1
DEFAULT_LOG_MAX_SIZE: Final = 10 * 1024 * 1024
DEFAULT_LOG_MAX_FILES: Final = 3
BACKOFF_MAX: Final = 60.0
BACKOFF_RESET_AFTER: Final = 10.0
"""A container that ran this long before exiting starts its back-off from the beginning."""

_STEP_FIELDS: Final = {
    "exec": "spec.command",
    "cwd": "spec.workdir",
    "user": "spec.user",
    "rootfs": "spec.mounts",
    "sysctl": "spec.sysctls",
    "hostname": "spec.hostname",
    "capabilities": "spec.capabilities",
}


class Engine:
    def __init__(
        self,
        root: Path,
        *,
        cgroup_parent: str = "/gantry",
        registries: RegistryOptions | None = None,
        network: NetworkConfig | None = None,
        use_launcher: bool = True,
        log_max_size: int = DEFAULT_LOG_MAX_SIZE,
        log_max_files: int = DEFAULT_LOG_MAX_FILES,
    ) -> None:
        self.root = root
        # Checked now, so a bad agent setting fails at start-up, not at each start.
        LogOptions(root.absolute(), max_size=log_max_size, max_files=log_max_files)
        self.log_max_size = log_max_size
        self.log_max_files = log_max_files
        self.cgroup_parent = cgroup_parent
        self.containers_dir = root / "containers"
        self.runtime_root = root / "runtime"
        self.tmp = root / "tmp"
        self.started_at = st.now_rfc3339()
        self.started_monotonic = time.monotonic()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._exit_cond = threading.Condition()
        self._restart_timers: dict[str, threading.Timer] = {}
        self._backoff: dict[str, float] = {}
        self.closing = False
        # The runtime changes a live cgroup's limits (Cgroup.update): no recreate needed.
        self.resources_in_place = True
        self.restarts_total = 0
        self.cgroup_layout = layout.detect()
        self.exec_available = execs.exec_available()
        _preload_runtime()
        for directory in (root, self.containers_dir, self.runtime_root):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(mode=0o700)
        self.store = Store(root / "state.db")
        self.images = ImageService(root / "images", registries)
        self.events = EventLog(self.store)
        self.health = HealthChecker(
            self._run_check, self._still_running, self._health_changed, self.store.save_health
        )
        self.monitor = ExitMonitor(self._on_exit)
        self.operations = Operations()
        self.net = networking.Networking(
            network or networking.config_from_settings(None, root), self._peer_network
        )
        self.launching = Launching(self.runtime_root, use_launcher=use_launcher)
        self.recover()

    def close(self) -> None:
        """Stop the engine's threads; the containers keep running."""
        self.closing = True
        for timer in list(self._restart_timers.values()):
            timer.cancel()
        self.events.close()
        self.health.close()
        self.monitor.close()
        self.launching.close()
        self._remove_empty_cgroup_parent()
        self.store.close()

    def _remove_empty_cgroup_parent(self) -> None:
        """Remove the agent's parent cgroup from every hierarchy where it is empty: no
        running container is left under it (the kernel refuses to remove a cgroup that has
        children, so a running container keeps it). The runtime creates it again with the
        next container. Only the parent itself: the cgroups above it are not the agent's."""
        if self.cgroup_parent.strip("/") == "":
            return
        try:
            directories = set(open_cgroup(self.cgroup_parent, self.cgroup_layout).paths().values())
        except (CgroupError, ValueError) as exc:
            _log.warning("cgroup parent %s: not removed: %s", self.cgroup_parent, exc)
            return
        for directory in sorted(directories):
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    _log.warning("cgroup parent %s: not removed: %s", directory, exc)
            else:
                _log.debug("removed the empty cgroup parent %s", directory)

    # --- locks and lookups ---------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            yield

    def _row(self, key: str) -> ContainerRow:
        row = self.store.get(key)
        if row is None:
            raise NotFound(f"no container named {key!r}", "name")
        return row

    @contextlib.contextmanager
    def _container(self, key: str) -> Iterator[ContainerRow]:
        name = self._row(key).name
        with self._locked(name):
            yield self._row(name)

    def _runtime(self, row: ContainerRow) -> supervisor.Container | None:
        """The runtime's view of the container (None when it has no runtime state).

        The same facts and rules as ``supervisor.find``, but with the host's cgroup layout
        read once at start-up instead of from the mount table at every look (which made
        listing 200 containers cost a mountinfo parse each)."""
        directory = st.container_dir(self.runtime_root, row.id)
        try:
            recorded = st.read_state(directory)
        except (st.StateError, OSError):
            recorded = None
        if recorded is None:
            if not directory.is_dir():
                return None
            return supervisor.Container(directory, None, "creating")
        alive, same = st.process_matches(recorded.pid, recorded.start_time)
        frozen = False
        if alive and same:
            with contextlib.suppress(CgroupError, OSError):
                cgroup = open_cgroup(recorded.cgroup, self.cgroup_layout)
                frozen = cgroup.can_freeze() and cgroup.state() == "frozen"
        facts = st.Facts(
            recorded=True,
            alive=alive,
            same_start_time=same,
            fifo_exists=(directory / st.FIFO_FILE).exists(),
            frozen=frozen,
        )
        return supervisor.Container(directory, recorded, st.derive_status(facts))

    def status(self, row: ContainerRow, runtime: supervisor.Container | None = None) -> str:
        runtime = runtime if runtime is not None else self._runtime(row)
        if runtime is not None and runtime.status in RUNNING_STATES:
            return runtime.status
        if runtime is not None and runtime.status in ("created", "creating"):
            return "created"  # only while a start is under way
        if row.id in self._restart_timers:
            return "restarting"
        return "created" if row.started_at is None else "stopped"

    def bundle_dir(self, row: ContainerRow) -> Path:
        return self.containers_dir / row.id

    # --- start-up ------------------------------------------------------------------------

    def recover(self) -> None:
        """Reconcile the database, the disk and the kernel after a start (or a crash):
        re-adopt running containers, record exits that happened meanwhile, apply restart
        policies, and remove what a crash left half-done."""
        rows = {row.id: row for row in self.store.containers()}
        self._network_recover(rows.values())
        for entry in list(self.containers_dir.iterdir()):
            if entry.name not in rows:  # staged by a create that never committed
                _log.info("removing the bundle %s: no container owns it", entry)
                shutil.rmtree(entry, ignore_errors=True)
        for runtime in supervisor.list_containers(self.runtime_root):
            if runtime.id not in rows:
                _log.info("removing the runtime container %s: no container owns it", runtime.id)
                self._delete_runtime(runtime)
        engine_images.recover(self, rows)
        for row in rows.values():
            with self._locked(row.name):
                self._recover_one(row)

    def _recover_one(self, row: ContainerRow) -> None:
        runtime = self._runtime(row)
        policy = row.spec["restart_policy"]["name"]
        if runtime is not None and runtime.status in RUNNING_STATES and runtime.state is not None:
            self.monitor.watch(row.id, runtime.state.pid, runtime.state.start_time)
            self._watch_health(row, row.started_at, adopted=True)
            self.events.emit("adopt", row.name, row.id, pid=runtime.state.pid)
            return
        if runtime is not None and runtime.status in ("created", "creating"):
            # The agent died between create and start: nothing of the user's ran yet.
            self._delete_runtime(runtime)
            runtime = None
            if row.started_at is not None and not row.stopped_by_user and policy != "no":
                self._launch(row, restart=True)
            return
        if runtime is not None:  # stopped while the agent was down
            record = self._finish(row, runtime, event="exit_while_down")
            row = self._row(row.id)
            if self._should_restart(row, record, at_startup=True):
                self._schedule_restart(row, delay=0.0)
            return
        was_running = row.started_at is not None and row.finished_at is None
        if was_running:  # its runtime state is gone: no exit status to be had
            self.store.update(row.id, finished_at=st.now_rfc3339(), exit_code=None)
            self.events.emit("exit_while_down", row.name, row.id, exit_code=None)
            row = self._row(row.id)
        if row.started_at is not None and self._should_restart(row, None, at_startup=True):
            self._schedule_restart(row, delay=0.0)

    # --- restart policies ----------------------------------------------------------------

    def _should_restart(
        self, row: ContainerRow, record: st.ExitRecord | None, *, at_startup: bool = False
    ) -> bool:
        policy = row.spec["restart_policy"]
        name = policy["name"]
        if self.closing or name == "no":
            return False
        if row.stopped_by_user:
            # Docker's meaning: `always` comes back when the daemon starts, `unless-stopped` not.
            return name == "always" and at_startup
        if name in ("always", "unless-stopped"):
            return True
        exit_code = row.exit_code if record is None else record.exit_code
        if exit_code == 0:
            return False
        retries = int(policy["max_retries"])
        return retries == 0 or row.restart_count < retries

    def _schedule_restart(self, row: ContainerRow, delay: float | None = None) -> None:
        if delay is None:
            delay = self._backoff.get(row.id, BACKOFF_FIRST / 2) * 2
            delay = min(max(delay, BACKOFF_FIRST), BACKOFF_MAX)
        self._backoff[row.id] = max(delay, BACKOFF_FIRST / 2)
        timer = threading.Timer(delay, self._restart_due, args=(row.name, row.id))
        timer.daemon = True
        old = self._restart_timers.pop(row.id, None)
        if old is not None:
            old.cancel()
        self._restart_timers[row.id] = timer
        timer.start()

    def _cancel_restart(self, row: ContainerRow) -> None:
        timer = self._restart_timers.pop(row.id, None)
        if timer is not None:
            timer.cancel()

    def _restart_due(self, name: str, container_id: str) -> None:
        if self.closing:
            return
        try:
            with self._locked(name):
                self._restart_timers.pop(container_id, None)
                row = self.store.get(container_id)
                if row is None or (
                    row.stopped_by_user and row.spec["restart_policy"]["name"] != "always"
                ):
                    return
                runtime = self._runtime(row)
                if runtime is not None and runtime.status in RUNNING_STATES:
                    return
                self._launch(row, restart=True)
        except EngineError as exc:
            _log.warning("container %s: restart failed: %s", name, exc.detail)
            row = self.store.get(container_id)
            if row is not None:
                self.store.update(row.id, restart_count=row.restart_count + 1)
                if self._should_restart(self._row(row.id), None):
                    self._schedule_restart(self._row(row.id))
        except Exception:
            _log.exception("container %s: restart failed", name)

    # --- exits ---------------------------------------------------------------------------

    def _on_exit(self, container_id: str) -> None:
        row = self.store.get(container_id)
        if row is None:
            return
        with self._locked(row.name):
            row = self.store.get(container_id)
            if row is None:
                return
            runtime = self._runtime(row)
            if runtime is None or runtime.status in RUNNING_STATES:
                return  # handled already (a stop), or started again
            record = self._finish(row, runtime, event="die")
            row = self._row(row.id)
            if self._should_restart(row, record):
                self._schedule_restart(row)

    def _finish(
        self, row: ContainerRow, runtime: supervisor.Container, *, event: str
    ) -> st.ExitRecord | None:
        """Record the exit of a stopped runtime container and delete it (its cgroup and
        state directory); the database keeps the status."""
        record: st.ExitRecord | None = None
        if runtime.state is not None:
            with contextlib.suppress(st.StateError):
                record = supervisor.wait_exit(runtime, timeout=supervisor.EXIT_TIMEOUT)
        finished = st.now_rfc3339()
        exit_code = None if record is None else record.exit_code
        exit_signal = None if record is None or not record.signal else record.signal
        ran_for = None
        if row.started_at is not None and record is not None:
            ran_for = record.finished_ns / 1e9 - _parse_time(row.started_at)
        if ran_for is not None and ran_for >= BACKOFF_RESET_AFTER:
            self._backoff.pop(row.id, None)
        self.health.forget(row.id)
        # The event first: whoever sees the exit recorded (a waiter) also finds its event.
        self.events.emit(event, row.name, row.id, exit_code=exit_code)
        self.store.update(
            row.id, finished_at=finished, exit_code=exit_code, exit_signal=exit_signal
        )
        self._delete_runtime(runtime)
        with self._exit_cond:
            self._exit_cond.notify_all()
        return record

    def _delete_runtime(self, runtime: supervisor.Container) -> None:
        self._network_down(runtime.id)
        try:
            with supervisor.locked(self.runtime_root, runtime.id) as fresh:
                supervisor.delete(fresh, force=True)
        except st.StateError:
            pass
        except (supervisor.RuntimeError_, CgroupError, OSError) as exc:
            _log.warning("container %s: cleaning up its runtime state: %s", runtime.id, exc)

    # --- network (see gantry.engine.networking) ---------------------------------------------

    def _network_up(self, row: ContainerRow, pid: int) -> None:
        """Attach a created, not yet started container; on failure delete it again."""
        try:
            self.net.up(row.id, row.name, row.spec, pid, self.bundle_dir(row))
        except BaseException:
            self._delete_runtime_id(row.id)
            raise

    def _network_down(self, container_id: str) -> None:
        self.net.down(container_id)

    def _network_recover(self, rows: Iterable[ContainerRow]) -> None:
        live = set()
        for row in rows:
            runtime = self._runtime(row)
            if runtime is not None and runtime.status in RUNNING_STATES:
                live.add(row.id)
        self.net.recover(live)

    def _peer_network(self, name: str) -> tuple[str, bool] | None:
        row = self.store.get(name)
        if row is None:
            return None
        runtime = self._runtime(row)
        return row.id, runtime is not None and runtime.status in RUNNING_STATES

    # --- health -------------------------------------------------------------------------------

    def _watch_health(
        self, row: ContainerRow, started_at: str | None, *, adopted: bool = False
    ) -> None:
        if row.spec["healthcheck"] is not None and self.exec_available:
            # A re-adopted container goes on with the health of its current run.
            restored = self.store.load_health(row.id, started_at) if adopted else None
            self.health.watch(row.id, row.spec["healthcheck"], started_at, restored)
        else:
            self.store.drop_health(row.id)

    def _run_check(self, container_id: str, request: execs.ExecRequest) -> dict[str, Any]:
        return execs.run_exec(self.runtime_root, container_id, request, self.tmp)

    def _still_running(self, container_id: str, started_at: str | None) -> bool:
        row = self.store.get(container_id)
        if self.closing or row is None or row.started_at != started_at:
            return False
        return self.status(row) in RUNNING_STATES

    def _health_changed(self, container_id: str, status: str) -> None:
        row = self.store.get(container_id)
        if row is not None:
            self.events.emit("health_status", row.name, row.id, status=status)

    # --- create, start ----------------------------------------------------------------------

    def _create_locked(
        self,
        name: str,
        spec: Mapping[str, Any],
        desired_state: str = "present",
        *,
        announce: bool = True,
    ) -> ContainerRow:
        if self.store.get(name) is not None:
            raise Conflict(f"a container named {name!r} exists already", "name")
        if spec["healthcheck"] is not None and not self.exec_available:
            raise Invalid(
                "spec.healthcheck: health checks run through exec, which is not available "
                "on this agent yet",
                "spec.healthcheck",
            )
        container_id = uuid.uuid4().hex
        config = bundles.config_for(
            engine_images.with_rootfs(self, spec, container_id), container_id, self.cgroup_parent
        )
        self.net.configure(config, spec, self.containers_dir / container_id)
        try:
            runtime_spec = bundles.spec_from_data(config)
            tini.init_binary(runtime_spec)
        except tini.InitBinaryError as exc:
            raise Invalid(f"spec.init: {exc}", "spec.init") from None
        except SpecError as exc:
            raise Invalid(
                f"spec: the runtime refuses the container's configuration: {exc}", "spec"
            ) from None
        staged = self.tmp / container_id
        staged.mkdir(mode=0o700)
        try:
            engine_images.prepare_snapshot(self, container_id, spec)
            st.write_atomic(staged / bundles.CONFIG_FILE, json.dumps(config, indent=2), mode=0o600)
            (staged / bundles.LOG_FILE).touch(mode=0o600)
            self.net.prepare_files(staged, spec)
            row = ContainerRow(
                id=container_id,
                name=name,
                spec=dict(spec),
                created_at=st.now_rfc3339(),
                desired_state=desired_state,
            )
            # Rename, then commit: a crash between the two leaves a bundle without a row,
            # which the next start-up removes.
            final = self.containers_dir / container_id
            staged.rename(final)
            try:
                with self.store.transaction() as db:
                    self.store.insert(db, row)
            except BaseException:
                shutil.rmtree(final, ignore_errors=True)
                raise
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            engine_images.discard_snapshot(self, container_id)
            raise
        if announce:
            self.events.emit("create", name, container_id)
        return row

    def _launch(
        self, row: ContainerRow, *, restart: bool = False, announce_create: bool = False
    ) -> None:
        """Create the runtime container for ``row`` and start it."""
        leftover = self._runtime(row)
        if leftover is not None:
            self._delete_runtime(leftover)
        directory = self.bundle_dir(row)
        engine_images.ensure_mounted(self, row)
        self.net.check_peer(row.spec)  # container:<name> joins a running peer (else 409)
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                # The runtime container, its init waiting for start (see .launch); its
                # stdout and stderr go to the shim, which writes the CRI log.
                recorded = self.launching.create(
                    row.id, directory, stdio=(null, null, null), log=self.log_options(row)
                )
            except SpecError as exc:
                raise Invalid(
                    f"spec: the runtime refuses the container's configuration: {exc}", "spec"
                ) from None
            except ContainerInitError as exc:
                field = _STEP_FIELDS.get(exc.step, "spec")
                raise Invalid(
                    f"{field}: the container cannot start: {exc.step}: {exc.message}", field
                ) from None
            except (supervisor.RuntimeError_, st.StateError, CgroupError) as exc:
                if "resources." in str(exc):  # the runtime's ResourceError, as a message
                    raise Invalid(
                        f"spec.resources: the container cannot start: {exc}", "spec.resources"
                    ) from None
                raise Conflict(f"the container cannot start: {exc}") from None
        finally:
            os.close(null)
        self._network_up(row, recorded.pid)
        try:
            with supervisor.locked(self.runtime_root, row.id) as runtime:
                supervisor.start(runtime)
        except (supervisor.RuntimeError_, st.StateError) as exc:
            self._delete_runtime_id(row.id)
            raise Conflict(f"the container cannot start: {exc}") from None
        changes: dict[str, Any] = {
            "started_at": st.now_rfc3339(),
            "finished_at": None,
            "exit_code": None,
            "exit_signal": None,
            "stopped_by_user": False,
        }
        if restart:
            changes["restart_count"] = row.restart_count + 1
            self.restarts_total += 1
        self.store.update(row.id, **changes)
        self.monitor.watch(row.id, recorded.pid, recorded.start_time)
        self._watch_health(row, changes["started_at"])
        if announce_create:
            self.events.emit("create", row.name, row.id)
        if restart:
            self.events.emit("restart", row.name, row.id, restart_count=changes["restart_count"])
        self.events.emit("start", row.name, row.id, pid=recorded.pid)

    def _delete_runtime_id(self, container_id: str) -> None:
        with contextlib.suppress(st.StateError):
            self._delete_runtime(supervisor.find(self.runtime_root, container_id))

    def _start_locked(self, row: ContainerRow) -> bool:
        status = self.status(row)
        if status in ("running",):
            return False
        if status == "paused":
            raise Conflict(f"container {row.name!r} is paused: unpause it", "name")
        self._cancel_restart(row)
        self._launch(row)
        return True

    def _stop_locked(
        self,
        row: ContainerRow,
        sig: str | None = None,
        timeout: float | None = None,
        *,
        user: bool = True,
    ) -> tuple[bool, int | None]:
        restart_pending = row.id in self._restart_timers
        self._cancel_restart(row)
        if user:
            self.store.update(row.id, stopped_by_user=True)
        runtime = self._runtime(row)
        if runtime is None or runtime.status not in RUNNING_STATES or runtime.state is None:
            if runtime is not None:
                self._finish(row, runtime, event="die")
            if restart_pending:  # a stop that cancels a restart-policy restart did something
                self.events.emit("stop", row.name, row.id)
            return restart_pending, self._row(row.id).exit_code
        number = int(signal.Signals[specs.signal_name(sig or row.spec["stop_signal"], "signal")])
        wait_for = row.spec["stop_timeout"] if timeout is None else timeout
        with contextlib.suppress(supervisor.RuntimeError_):
            supervisor.kill(runtime, number)
        if runtime.status == "paused":
            with contextlib.suppress(supervisor.RuntimeError_, CgroupError):
                supervisor.resume(runtime)
        record = supervisor.wait_exit(runtime, timeout=wait_for)
        if record is None:
            with contextlib.suppress(CgroupError, supervisor.RuntimeError_):
                runtime.cgroup().kill_all(signal.SIGKILL)
        fresh = self._runtime(row)
        if fresh is not None:
            self._finish(row, fresh, event="die")
        self.events.emit("stop", row.name, row.id)
        return True, self._row(row.id).exit_code

    def _remove_locked(self, row: ContainerRow, *, event: bool = True) -> None:
        self._cancel_restart(row)
        self.health.forget(row.id)
        runtime = self._runtime(row)
        if runtime is not None:
            self._delete_runtime(runtime)
        directory = self.bundle_dir(row)
        doomed = self.tmp / f"remove-{row.id}"
        with contextlib.suppress(FileNotFoundError):
            directory.rename(doomed)
        with self.store.transaction() as db:
            self.store.delete(db, row.id)
        shutil.rmtree(doomed, ignore_errors=True)
        if row.spec.get("image") is not None:
            engine_images.discard_snapshot(self, row.id)
        self._backoff.pop(row.id, None)
        if event:
            self.events.emit("destroy", row.name, row.id)
        with self._exit_cond:
            self._exit_cond.notify_all()

    # --- the verbs -------------------------------------------------------------------------

    def create(
        self, name: str, raw_spec: Any, *, start: bool = False, pull: str = "missing"
    ) -> dict[str, Any]:
        specs.validate_name(name)
        engine_images.pull_for_apply(self, raw_spec, pull, dry_run=False)
        spec = specs.normalise(
            raw_spec, name=name, image_resolver=engine_images.resolver(self.images)
        )
        with self._locked(name):
            row = self._create_locked(
                name, spec, "running" if start else "present", announce=not start
            )
            if start:
                self._launch_or_undo(row)
            return self._inspect(self._row(row.id))

    def _launch_or_undo(self, row: ContainerRow) -> None:
        """Start a container created by this same request; when it cannot start, remove
        it again, so the failed request changed nothing (not even an event)."""
        try:
            self._launch(row, announce_create=True)
        except BaseException:
            self._remove_locked(row, event=False)
            raise

    def start(self, key: str) -> dict[str, Any]:
        with self._container(key) as row:
            changed = self._start_locked(row)
            return {"changed": changed, "container": self._inspect(self._row(row.id))}

    def stop(self, key: str, sig: Any = None, timeout: Any = None) -> dict[str, Any]:
        if sig is not None:
            specs.signal_name(sig, "signal")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
        ):
            raise Invalid(f"timeout: must be a number of seconds >= 0, got {timeout!r}", "timeout")
        with self._container(key) as row:
            changed, exit_code = self._stop_locked(row, sig, timeout)
            return {
                "changed": changed,
                "exit_code": exit_code,
                "container": self._inspect(self._row(row.id)),
            }

    def restart(self, key: str, timeout: Any = None) -> dict[str, Any]:
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
        ):
            raise Invalid(f"timeout: must be a number of seconds >= 0, got {timeout!r}", "timeout")
        with self._container(key) as row:
            if self.status(row) == "paused":
                raise Conflict(f"container {row.name!r} is paused: unpause it", "name")
            self._stop_locked(row, None, timeout)
            self._launch(self._row(row.id))
            return {"changed": True, "container": self._inspect(self._row(row.id))}

    def kill(self, key: str, sig: Any = "SIGKILL", all_processes: bool = False) -> dict[str, Any]:
        name = specs.signal_name(sig, "signal")
        with self._container(key) as row:
            runtime = self._runtime(row)
            if runtime is None or runtime.status not in RUNNING_STATES:
                raise Conflict(
                    f"container {row.name!r} is {self.status(row, runtime)}: nothing to signal",
                    "name",
                )
            if name in ("SIGKILL", "SIGTERM", "SIGINT", "SIGQUIT"):
                self.store.update(row.id, stopped_by_user=True)
            try:
                supervisor.kill(runtime, int(signal.Signals[name]), all_processes=all_processes)
            except (supervisor.RuntimeError_, CgroupError) as exc:
                raise Conflict(str(exc), "name") from None
            self.events.emit("kill", row.name, row.id, signal=name)
            return {"changed": True}

    def pause(self, key: str) -> dict[str, Any]:
        with self._container(key) as row:
            runtime = self._runtime(row)
            if runtime is not None and runtime.status == "paused":
                return {"changed": False}
            if runtime is None or runtime.status != "running":
                raise Conflict(
                    f"container {row.name!r} is {self.status(row, runtime)}: cannot pause it",
                    "name",
                )
            try:
                supervisor.pause(runtime)
            except (supervisor.RuntimeError_, CgroupError) as exc:
                raise Conflict(str(exc), "name") from None
            self.events.emit("pause", row.name, row.id)
            return {"changed": True}

    def unpause(self, key: str) -> dict[str, Any]:
        with self._container(key) as row:
            return {"changed": self._unpause_locked(row)}

    def _unpause_locked(self, row: ContainerRow) -> bool:
        runtime = self._runtime(row)
        if runtime is not None and runtime.status == "running":
            return False
        if runtime is None or runtime.status != "paused":
            raise Conflict(
                f"container {row.name!r} is {self.status(row, runtime)}: cannot unpause it", "name"
            )
        try:
            supervisor.resume(runtime)
        except (supervisor.RuntimeError_, CgroupError) as exc:
            raise Conflict(str(exc), "name") from None
        self.events.emit("unpause", row.name, row.id)
        return True

    def wait(
        self, key: str, timeout: Any = None, *, cancelled: threading.Event | None = None
    ) -> dict[str, Any]:
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
        ):
            raise Invalid(f"timeout: must be a number of seconds >= 0, got {timeout!r}", "timeout")
        row = self._row(key)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._exit_cond:
            while True:
                current = self.store.get(row.id)
                if current is None:
                    return {"exit_code": row.exit_code, "timed_out": False, "status": "removed"}
                status = self.status(current)
                # Stopped, and its exit recorded (the exit handler may still be at work).
                settled = (
                    current.started_at is None
                    or current.finished_at is not None
                    or self._runtime(current) is None
                )
                stop = self.closing or (cancelled is not None and cancelled.is_set())
                if (status not in ("running", "paused", "restarting") and settled) or stop:
                    return {"exit_code": current.exit_code, "timed_out": False, "status": status}
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return {"exit_code": None, "timed_out": True, "status": status}
                self._exit_cond.wait(1.0 if remaining is None else min(remaining, 1.0))

    def remove(self, key: str, *, force: bool = False, dry_run: bool = False) -> dict[str, Any]:
        with self._container(key) as row:
            status = self.status(row)
            running = status in ("running", "paused")
            if running and not force:
                raise Conflict(
                    f"container {row.name!r} is {status}: stop it first, or use force", "force"
                )
            before = {"state": status, "spec": row.spec}
            actions = ["stop", "remove"] if running else ["remove"]
            result = {
                "changed": True,
                "actions": actions,
                "diff": {"before": before, "after": None, "fields": ["state"]},
            }
            if dry_run:
                return result
            # As `docker rm -f`: a running container is killed (SIGKILL to every process
            # of its cgroup, by the runtime's forced delete), not stopped gracefully.
            self._remove_locked(row)
            return result

    # --- desired state -----------------------------------------------------------------------

    def apply(
        self,
        name: str,
        raw_spec: Any,
        state: Any = "running",
        *,
        dry_run: bool = False,
        pull: str = "missing",
    ) -> dict[str, Any]:
        """Converge the container ``name`` to ``raw_spec`` in ``state``; see docs/api.md."""
        specs.validate_name(name)
        if not isinstance(state, str):
            raise Invalid(f"state: must be present, running or stopped, got {state!r}", "state")
        pulled = engine_images.pull_for_apply(self, raw_spec, pull, dry_run=dry_run)
        if pulled == "pending":  # a dry run: the image's config is not known before a pull
            row = self.store.get(name)
            status = None if row is None else self.status(row)
            return engine_images.dry_run_pending(self, name, state, row, status)
        desired = specs.normalise(
            raw_spec, name=name, image_resolver=engine_images.resolver(self.images)
        )
        with self._locked(name):
            row = self.store.get(name)
            status = None if row is None else self.status(row)
            the_plan = plan(
                None if row is None else row.spec,
                status,
                desired,
                state,
                resources_in_place=self.resources_in_place,
            )
            after_status = _predict(status, the_plan.actions)
            fields = [
                field if field == "image_id" else f"spec.{field}" for field in the_plan.fields
            ]
            if status != after_status:
                fields.append("state")
            result: dict[str, Any] = {
                "changed": bool(the_plan.actions) or pulled is not None,
                "actions": ([pulled] if pulled else []) + list(the_plan.actions),
                "diff": {
                    "before": None if row is None else {"state": status, "spec": row.spec},
                    "after": {"state": after_status, "spec": desired},
                    "fields": fields,
                },
            }
            if dry_run:
                result["container"] = None if row is None else self._inspect(row)
                return result
            actions = list(the_plan.actions)
            if actions[:2] == ["create", "start"]:
                row = self._create_locked(name, desired, state, announce=False)
                self._launch_or_undo(row)
                actions = actions[2:]
            for action in actions:
                try:
                    row = self._act(action, name, row, desired, state)
                except EngineError as exc:
                    if action != "start" or "recreate" not in actions:
                        raise
                    # As docker-compose: the old container is gone by now, the new one
                    # stays created with the new spec; say so, so nobody looks for the old.
                    raise type(exc)(
                        f"{exc.detail} (the container was recreated with the new spec: the "
                        "old one is removed, the new one is created but not running; fix "
                        "the spec and apply again)",
                        exc.field,
                    ) from None
            assert row is not None
            if row.desired_state != state:
                self.store.update(row.id, desired_state=state)
            result["container"] = self._inspect(self._row(row.id))
            return result

    def _act(
        self, action: str, name: str, row: ContainerRow | None, desired: dict[str, Any], state: str
    ) -> ContainerRow:
        if action == "create":
            return self._create_locked(name, desired, state)
        assert row is not None
        if action == "recreate":
            if self.status(row) in ("running", "paused"):
                self._stop_locked(row)  # with the old stop signal and timeout
            self._remove_locked(self._row(row.id))
            return self._create_locked(name, desired, state)
        if action == "update":
            self._update_locked(row, desired)
        elif action == "start":
            self._start_locked(row)
        elif action == "stop":
            self._stop_locked(row)
        elif action == "unpause":
            self._unpause_locked(row)
        return self._row(row.id)

    def _update_locked(self, row: ContainerRow, desired: dict[str, Any]) -> None:
        changed_resources = row.spec["resources"] != desired["resources"]
        config = bundles.config_for(
            engine_images.with_rootfs(self, desired, row.id), row.id, self.cgroup_parent
        )
        self.net.configure(config, desired, self.bundle_dir(row))
        if changed_resources:
            runtime = self._runtime(row)
            if runtime is not None and runtime.status in RUNNING_STATES:
                linux = bundles.spec_from_data(config).linux
                assert linux is not None and linux.resources is not None
                try:
                    runtime.cgroup().update(
                        blkio.with_removals(
                            linux.resources, row.spec["resources"], desired["resources"]
                        )
                    )
                except ResourceError as exc:
                    name = exc.errors[0][0] if exc.errors else ""
                    field = _resource_field(name)
                    raise Invalid(f"{field}: cannot apply: {exc}", field) from None
                except (CgroupError, OSError) as exc:
                    raise Invalid(
                        f"spec.resources: the kernel refused the new limits: {exc}",
                        "spec.resources",
                    ) from None
        st.write_atomic(
            self.bundle_dir(row) / bundles.CONFIG_FILE, json.dumps(config, indent=2), mode=0o600
        )
        self.store.update(row.id, spec=desired)
        if desired["healthcheck"] != row.spec["healthcheck"]:
            self.health.forget(row.id)
            if self.status(row) in RUNNING_STATES:
                self._watch_health(self._row(row.id), row.started_at)
        if desired["restart_policy"] != row.spec["restart_policy"]:
            self._backoff.pop(row.id, None)
        self.events.emit("update", row.name, row.id)

    # --- reading ---------------------------------------------------------------------------

    def inspect(self, key: str) -> dict[str, Any]:
        return self._inspect(self._row(key))

    def _inspect(self, row: ContainerRow) -> dict[str, Any]:
        runtime = self._runtime(row)
        status = self.status(row, runtime)
        pid = (
            runtime.state.pid
            if runtime is not None and runtime.state is not None and status in RUNNING_STATES
            else None
        )
        directory = self.bundle_dir(row)
        cgroup = (
            runtime.state.cgroup
            if runtime is not None and runtime.state is not None
            else f"{self.cgroup_parent.rstrip('/')}/{row.id}"
        )
        return {
            "id": row.id,
            "name": row.name,
            "created_at": row.created_at,
            "spec": row.spec,
            "image_id": row.spec.get("image_id"),
            "desired_state": row.desired_state,
            "state": {
                "status": status,
                "running": status in RUNNING_STATES,
                "paused": status == "paused",
                "pid": pid,
                "exit_code": row.exit_code,
                "signal": None if row.exit_signal is None else signal.Signals(row.exit_signal).name,
                "started_at": row.started_at,
                "finished_at": row.finished_at,
                "restart_count": row.restart_count,
                "stopped_by_user": row.stopped_by_user,
                "health": self.health.state(row.id)
                if row.spec["healthcheck"] is not None
                else dict(NO_HEALTH),
            },
            "paths": {
                "bundle": str(directory),
                "rootfs": engine_images.rootfs_of(self, row.spec, row.id),
                "log": str(directory / bundles.LOG_FILE),
            },
            "cgroup": cgroup,
            "network_settings": self.net.settings(row.id),
        }

    def list(
        self,
        *,
        statuses: list[str] | None = None,
        labels: list[str] | None = None,
        name: str | None = None,
    ) -> list[dict[str, Any]]:
        known = ("created", "running", "paused", "stopped", "restarting")
        for index, wanted in enumerate(statuses or []):
            if wanted not in known:
                raise Invalid(
                    f"status: must be one of {', '.join(known)}, got {wanted!r}",
                    f"query.status[{index}]",
                )
        label_filters: list[tuple[str, str | None]] = []
        for text in labels or []:
            key, sep, value = text.partition("=")
            if not key:
                raise Invalid(f"label: must be KEY or KEY=VALUE, got {text!r}", "query.label")
            label_filters.append((key, value if sep else None))
        out: list[dict[str, Any]] = []
        for row in self.store.containers():
            if name is not None and name not in row.name:
                continue
            if any(
                key not in row.spec["labels"]
                or (value is not None and row.spec["labels"][key] != value)
                for key, value in label_filters
            ):
                continue
            runtime = self._runtime(row)
            status = self.status(row, runtime)
            if statuses and status not in statuses:
                continue
            out.append(
                {
                    "id": row.id,
                    "name": row.name,
                    "status": status,
                    "pid": runtime.state.pid
                    if runtime is not None
                    and runtime.state is not None
                    and status in RUNNING_STATES
                    else None,
                    "exit_code": row.exit_code,
                    "created_at": row.created_at,
                    "started_at": row.started_at,
                    "labels": row.spec["labels"],
                    "image": row.spec["image"],
                    "rootfs": row.spec["rootfs"],
                    "command": [*row.spec["entrypoint"], *row.spec["command"]],
                }
            )
        return out

    def log_options(self, row: ContainerRow) -> LogOptions:
        """Where and how the shim writes ``row``'s log: its spec's ``log``, else the
        agent's defaults (a change to ``log`` applies at the next start)."""
        given = row.spec.get("log") or {}
        max_size = given.get("max_size")
        max_files = given.get("max_files")
        return LogOptions(
            self.bundle_dir(row) / bundles.LOG_FILE,
            max_size=self.log_max_size if max_size is None else int(max_size),
            max_files=self.log_max_files if max_files is None else int(max_files),
        )

    def log_path(self, key: str) -> tuple[ContainerRow, Path]:
        row = self._row(key)
        return row, self.bundle_dir(row) / bundles.LOG_FILE

    def is_running(self, container_id: str) -> bool:
        row = self.store.get(container_id)
        return row is not None and self.status(row) in ("running", "paused", "restarting")

    def exec(self, key: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Run a command in a running container to completion (see :mod:`.execs`)."""
        if not self.exec_available:
            raise Unavailable("exec is not available on this agent yet")
        request = execs.parse_request(raw)
        row = self._row(key)
        runtime = self._runtime(row)
        status = self.status(row, runtime)
        if status != "running":
            raise Conflict(f"container {row.name!r} is {status}, not running: cannot exec", "name")
        return execs.run_exec(self.runtime_root, row.id, request, self.tmp)

    def start_session(self, key: str, raw: Mapping[str, Any]) -> sessions.Session:
        """Start an interactive exec (see :mod:`.sessions`) in a running container."""
        if not self.exec_available:
            raise Unavailable("exec is not available on this agent yet")
        row = self._row(key)
        status = self.status(row)
        if status != "running":
            raise Conflict(f"container {row.name!r} is {status}, not running: cannot exec", "name")
        return sessions.start_session(self.runtime_root, row.id, raw, self.tmp)

    def stats(self, key: str) -> dict[str, Any]:
        """The running container's cgroup statistics (runc's ``events --stats`` shape)."""
        row = self._row(key)
        runtime = self._runtime(row)
        status = self.status(row, runtime)
        if runtime is None or runtime.state is None or status not in RUNNING_STATES:
            raise Conflict(f"container {row.name!r} is {status}: no statistics", "name")
        try:
            stats = open_cgroup(runtime.state.cgroup, self.cgroup_layout).stats()
        except CgroupError as exc:
            raise Conflict(f"container {row.name!r}: {exc}", "name") from None
        return {"id": row.id, "name": row.name, "read_at": st.now_rfc3339(), **stats.to_json()}

    def runtime_of(self, key: str) -> supervisor.Container | None:
        return self._runtime(self._row(key))


def _preload_runtime() -> None:
    """Import every module a container's supervisor loads lazily, before any request.

    Containers are created by the warm launcher (:mod:`.launch`); only when none can be
    started does ``supervisor.create`` fork this multi-threaded process, and then a module
    imported for the first time in the child while another thread of the parent held the
    import lock at the fork would deadlock the child (the lock's owner does not exist
    there)."""
    for module in (
        "gantry.runtime.process",
        "gantry.runtime.init",
        "gantry.runtime.rootfs",
        "gantry.runtime.seccomp",
        "gantry.runtime.cgroups.v1",
        "gantry.runtime.cgroups.v2",
        "gantry.runtime.cgroups.resources",
        "gantry.runtime.cgroups.devices",
        "gantry.runtime.cgroups.stats",
    ):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


_OCI_RESOURCE_FIELDS: Final = {
    "memory.limit": "memory",
    "memory.swap": "memory_swap",
    "cpu.quota": "cpus",
    "cpu.period": "cpus",
    "cpu.shares": "cpu_shares",
    "cpu.cpus": "cpuset_cpus",
    "pids.limit": "pids_limit",
    "blockIO.weight": "blkio_weight",
    "blockIO.throttleReadBps": "device_read_bps",
    "blockIO.throttleWriteBps": "device_write_bps",
    "blockIO.throttleReadIOPS": "device_read_iops",
    "blockIO.throttleWriteIOPS": "device_write_iops",
}


def _resource_field(oci_name: str) -> str:
    """The container spec's field for a runtime resource error's OCI field name."""
    for key, field in _OCI_RESOURCE_FIELDS.items():
        if key in oci_name:
            return f"spec.resources.{field}"
    return "spec.resources"


def _predict(status: str | None, actions: tuple[str, ...]) -> str | None:
    if "start" in actions or "unpause" in actions:
        return "running"
    if "stop" in actions:
        return "stopped"
    if "create" in actions or "recreate" in actions:
        return "created"
    return status


def _parse_time(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC time as ``now_rfc3339`` writes it."""
    head, _dot, rest = text.rstrip("Z").partition(".")
    seconds = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    digits = "".join(ch for ch in rest if ch.isdigit())
    return seconds + (float(f"0.{digits}") if digits else 0.0)
