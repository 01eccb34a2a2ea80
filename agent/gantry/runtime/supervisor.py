"""A container's life under ``--root``: create (with its supervisor), start, signal, pause,
delete. The ``gantry-runtime`` verbs are thin wrappers over these functions.

``create`` forks a **supervisor** that does not depend on the caller: it is a grandchild
(the middle process exits at once, so the supervisor is nobody's child to reap) in a
session of its own. The supervisor creates the cgroup, creates the container's init with
an ``exec.fifo`` start gate (:func:`gantry.runtime.process.create_init`), writes
``state.json``, tells the caller over a close-on-exec pipe (``created`` and the pid, or
the failing step), and then execs ``gantry-shim`` in its own place: the init stays its
child, the shim records the exit status in ``exit.json``, and a running container costs
one small C process. ``start`` may then come from any process: it opens the FIFO.

Every failure of ``create`` leaves nothing: no state directory, no cgroup, no process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import posixpath
import select
import shutil
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gantry.linux import proc
from gantry.runtime import console, hooks, saved
from gantry.runtime import state as st
from gantry.runtime.cgroups import Cgroup, CgroupError, apply_spec, open_cgroup
from gantry.runtime.cgroups.path import DEFAULT_PARENT, cgroup_path_for
from gantry.runtime.process import ContainerInitError, create_init, open_start_fifo
from gantry.runtime.shim import shim_path
from gantry.runtime.spec import Spec

__all__ = [
    "Container",
    "RuntimeError_",
    "create",
    "delete",
    "find",
    "kill",
    "list_containers",
    "locked",
    "pause",
    "resume",
    "start",
    "wait_exit",
]

_log = logging.getLogger(__name__)

CREATE_TIMEOUT: Final = 60.0
EXIT_TIMEOUT: Final = 10.0
"""How long ``delete`` waits for the shim to record the exit after a kill."""


class RuntimeError_(Exception):
    """A verb cannot be done; the message says why, naming the container."""


@dataclass(frozen=True)
class Container:
    """A container found under the root: its directory, what create recorded, its status."""

    directory: Path
    state: st.ContainerState | None
    status: st.Status

    @property
    def id(self) -> str:
        return self.directory.name

    def cgroup(self) -> Cgroup:
        assert self.state is not None
        return open_cgroup(self.state.cgroup)


def _observe(directory: Path) -> Container:
    recorded = st.read_state(directory)
    if recorded is None:
        return Container(directory, None, "creating")
    alive, same = st.process_matches(recorded.pid, recorded.start_time)
    frozen = False
    if alive and same:
        with contextlib.suppress(CgroupError, OSError):
            cgroup = open_cgroup(recorded.cgroup)
            frozen = cgroup.can_freeze() and cgroup.state() == "frozen"
    facts = st.Facts(
        recorded=True,
        alive=alive,
        same_start_time=same,
        fifo_exists=(directory / st.FIFO_FILE).exists(),
        frozen=frozen,
    )
    return Container(directory, recorded, st.derive_status(facts))


def find(root: Path, container_id: str) -> Container:
    """The container ``container_id`` under ``root``; ``StateError`` when there is none."""
    directory = st.container_dir(root, container_id)
    if not directory.is_dir():
        raise st.StateError(f"container {container_id!r} does not exist")
    return _observe(directory)


@contextlib.contextmanager
def locked(root: Path, container_id: str) -> Iterator[Container]:
    """The container, observed while holding an exclusive lock on its directory, so
    verbs on one container (two starts, a delete and a kill) happen one after another."""
    directory = st.container_dir(root, container_id)
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise st.StateError(f"container {container_id!r} does not exist") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not directory.is_dir():  # deleted while we waited for the lock
            raise st.StateError(f"container {container_id!r} does not exist")
        yield _observe(directory)
    finally:
        os.close(fd)


def list_containers(root: Path) -> list[Container]:
    """Every container under ``root``, sorted by id."""
    found: list[Container] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                with contextlib.suppress(st.StateError, FileNotFoundError):
                    found.append(_observe(Path(entry.path)))
    return found


# --- create -----------------------------------------------------------------------------------


def create(
    root: Path,
    container_id: str,
    *,
    bundle: Path,
    spec: Spec,
    stdio: Sequence[int] = (0, 1, 2),
    timeout: float = CREATE_TIMEOUT,
    console_socket: socket.socket | None = None,
) -> st.ContainerState:
    """Create the container and its supervisor; return what was recorded.

    With ``process.terminal`` the master of the container's pty is sent over
    ``console_socket`` (a connected AF_UNIX stream socket, see
    :mod:`gantry.runtime.console`), which is then required.
    Raises :class:`StateError` (bad id, the container exists), :class:`ContainerInitError`
    (the init failed at a named step) or :class:`RuntimeError_`; nothing is left then.
    """
    directory = st.container_dir(root, container_id)
    if spec.process is None:
        raise RuntimeError_("the spec has no process to run")
    if spec.process.terminal and console_socket is None:
        raise RuntimeError_(
            "process.terminal is true: a console socket must receive the terminal "
            "(--console-socket), or set process.terminal to false"
        )
    cgroup_path = cgroup_path_for(spec, container_id)
    shim = shim_path()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        raise st.StateError(f"container {container_id!r} already exists") from None
    try:
        fifo = directory / st.FIFO_FILE
        os.mkfifo(fifo, 0o600)
        # Whoever the container's root is mapped to must be able to write it.
        os.chmod(fifo, 0o622)
        report = _spawn_supervisor(
            directory, container_id, bundle, spec, cgroup_path, shim, stdio, timeout, console_socket
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return report


def _spawn_supervisor(
    directory: Path,
    container_id: str,
    bundle: Path,
    spec: Spec,
    cgroup_path: str,
    shim: Path,
    stdio: Sequence[int],
    timeout: float,
    console_socket: socket.socket | None = None,
) -> st.ContainerState:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    middle = os.fork()
    if middle == 0:  # the middle process: fork the supervisor and go, so nobody reaps it
        code = 1
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() == 0:
                _supervise(
                    directory,
                    container_id,
                    bundle,
                    spec,
                    cgroup_path,
                    shim,
                    stdio,
                    write_end,
                    console_socket,
                )
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        os.waitpid(middle, 0)
        message = _read_report(read_end, timeout)
    finally:
        os.close(read_end)
    kind = message.get("type")
    if kind == "created":
        recorded = st.read_state(directory)
        if recorded is None:
            raise RuntimeError_(f"the supervisor did not record {directory / st.STATE_FILE}")
        return recorded
    if kind == "init-error":
        raise ContainerInitError(str(message["step"]), str(message["message"]))
    raise RuntimeError_(str(message.get("message", "the supervisor failed")))


def _read_report(fd: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        ready, _w, _x = select.select([fd], [], [], max(0.0, remaining))
        if not ready:
            return {"type": "error", "message": f"no word from the supervisor in {timeout:g}s"}
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    if not data:
        return {"type": "error", "message": "the supervisor died without a word"}
    try:
        message = json.loads(data)
    except ValueError:
        return {"type": "error", "message": f"garbled word from the supervisor: {data[:200]!r}"}
    return message if isinstance(message, dict) else {"type": "error", "message": repr(message)}


def _supervise(
    directory: Path,
    container_id: str,
    bundle: Path,
    spec: Spec,
    cgroup_path: str,
    shim: Path,
    stdio: Sequence[int],
    report_fd: int,
    console_socket: socket.socket | None = None,
) -> None:
    """The supervisor (never returns): set the container up, report, become the shim."""
    cgroup: Cgroup | None = None
    log = logging.LoggerAdapter(_log, {"container": container_id})
    try:
        # The container's stdio are the caller's: copies above 2 (close-on-exec), so the
        # shim's own stdio can be let go of before it runs for the container's lifetime.
        container_stdio = [os.dup(fd) for fd in stdio]
        cgroup = open_cgroup(cgroup_path)
        _create_cgroup(cgroup)
        # Limits and device rules are in force before the container's first process joins.
        apply_spec(cgroup, spec, log)
        procs_files = sorted({path / "cgroup.procs" for path in cgroup.paths().values()})
        handle = create_init(
            spec,
            bundle=bundle,
            stdio=container_stdio,
            cgroup_procs=procs_files,
            start_fifo=directory / st.FIFO_FILE,
            log=log,
            container_id=container_id,
        )
        for fd in container_stdio:
            os.close(fd)
        if handle.console_fd >= 0 and console_socket is not None:
            console.send_console(console_socket, handle.console_fd, container_id)
            os.close(handle.console_fd)
            console_socket.close()
        saved.save_spec(directory, spec)
        shim_start = proc.start_time(os.getpid())
        recorded = st.ContainerState(
            id=container_id,
            pid=handle.pid,
            start_time=handle.start_time,
            bundle=str(bundle),
            rootfs=str(bundle / spec.root.path),
            created=st.now_rfc3339(),
            cgroup=cgroup.path,
            shim_pid=os.getpid(),
            shim_start_time=shim_start,
            oci_version=spec.oci_version,
            annotations=dict(spec.annotations),
        )
        st.write_state(directory, recorded)
        # The container exists now: a caller that went away meanwhile (EPIPE) changes
        # nothing, it is still supervised and can be started or deleted.
        with contextlib.suppress(OSError):
            _send(report_fd, {"type": "created", "pid": handle.pid})
        _become_shim(shim, handle.pid, directory)
    except ContainerInitError as exc:
        _fail(report_fd, cgroup, {"type": "init-error", "step": exc.step, "message": exc.message})
    except BaseException as exc:  # every failure goes back to the caller as one line
        text = str(exc) or type(exc).__name__
        _fail(report_fd, cgroup, {"type": "error", "message": text})
    finally:
        os._exit(1)


def _create_cgroup(cgroup: Cgroup) -> None:
    # The last delete under Gantry's parent cgroup removes the parent: a create racing
    # with it may find the parent gone under its feet once, never for good.
    for attempt in range(3):
        try:
            cgroup.create()
            return
        except CgroupError:
            if attempt == 2:
                raise
            time.sleep(0.01)


def _send(fd: int, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.close(fd)


def _fail(report_fd: int, cgroup: Cgroup | None, message: dict[str, Any]) -> None:
    if cgroup is not None:
        with contextlib.suppress(CgroupError, OSError):
            cgroup.kill_all(signal.SIGKILL, timeout=5.0)
            _destroy_cgroup(cgroup, timeout=5.0)
    with contextlib.suppress(OSError):
        _send(report_fd, message)


def _become_shim(shim: Path, init_pid: int, directory: Path) -> None:
    # The shim keeps nothing of the caller's: /dev/null in, its own log for stderr. The
    # report pipe, the pidfd and the sync socket are close-on-exec.
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    log_fd = os.open(
        directory / st.SHIM_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
    )
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    os.close(log_fd)
    os.execv(shim, ["gantry-shim", str(init_pid), str(directory / st.EXIT_FILE)])


# --- start, signal, pause ---------------------------------------------------------------------


def _pidfd_of(pid: int, start_time: int) -> int | None:
    """A pidfd of the process ``pid`` if it is still the one started at ``start_time``
    (checked after opening: the pidfd pins it, so a reuse cannot slip in between)."""
    try:
        pidfd = proc.pidfd_open(pid)
    except ProcessLookupError:
        return None
    alive, same = st.process_matches(pid, start_time)
    if alive and same:
        return pidfd
    os.close(pidfd)
    return None


def start(container: Container, timeout: float = CREATE_TIMEOUT) -> None:
    """Let a created container exec its program."""
    if container.status != "created" or container.state is None:
        raise RuntimeError_(
            f"container {container.id!r} is {container.status}, not created: cannot start it"
        )
    pidfd = _pidfd_of(container.state.pid, container.state.start_time)
    if pidfd is None:
        raise RuntimeError_(f"container {container.id!r} stopped before it was started")
    fifo = container.directory / st.FIFO_FILE
    try:
        open_start_fifo(fifo, pidfd, timeout)
    except FileNotFoundError:
        raise RuntimeError_(f"container {container.id!r} was started already") from None
    except ContainerInitError as exc:
        raise RuntimeError_(f"container {container.id!r}: {exc.message}") from None
    finally:
        os.close(pidfd)
    with contextlib.suppress(FileNotFoundError):
        fifo.unlink()
    _run_lifecycle_hooks(container, "poststart", "running")


def _run_lifecycle_hooks(container: Container, kind: hooks.HookKind, status: str) -> None:
    """poststart and poststop: failures are warnings (runtime-spec config.md)."""
    spec = saved.load_saved_spec(container.directory)
    found = hooks.hooks_of(spec.hooks if spec else None, kind)
    if spec is None or not found or container.state is None:
        return
    state = hooks.hook_state(
        spec, container.id, status=status, pid=container.state.pid, bundle=container.state.bundle
    )
    hooks.run_hooks_warning(
        found, kind, state, logging.LoggerAdapter(_log, {"container": container.id})
    )


def kill(container: Container, sig: int, *, all_processes: bool = False) -> None:
    """Send ``sig`` to the container's init, or with ``all_processes`` to every process in
    its cgroup."""
    if container.state is None or container.status in ("stopped", "creating"):
        raise RuntimeError_(f"container {container.id!r} is {container.status}: nothing to signal")
    if all_processes:
        container.cgroup().kill_all(sig)
        return
    pidfd = _pidfd_of(container.state.pid, container.state.start_time)
    if pidfd is None:
        raise RuntimeError_(f"container {container.id!r} is stopped: nothing to signal")
    try:
        proc.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        raise RuntimeError_(f"container {container.id!r} is stopped: nothing to signal") from None
    finally:
        os.close(pidfd)


def pause(container: Container) -> None:
    if container.status != "running":
        raise RuntimeError_(f"container {container.id!r} is {container.status}, not running")
    cgroup = container.cgroup()
    if not cgroup.can_freeze():
        raise RuntimeError_(f"container {container.id!r}: no cgroup freezer on this host")
    cgroup.freeze()


def resume(container: Container) -> None:
    if container.status != "paused":
        raise RuntimeError_(f"container {container.id!r} is {container.status}, not paused")
    container.cgroup().thaw()


# --- wait and delete --------------------------------------------------------------------------


def wait_exit(container: Container, timeout: float | None = None) -> st.ExitRecord | None:
    """Wait until the shim has recorded the init's exit; the record, or ``None`` when there
    will be none (no shim left to write it) or ``timeout`` passed."""
    assert container.state is not None
    deadline = None if timeout is None else time.monotonic() + timeout
    pidfd = _pidfd_of(container.state.pid, container.state.start_time)
    if pidfd is not None:
        try:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _w, _x = select.select([pidfd], [], [], remaining)
            if not ready:
                return None
        finally:
            os.close(pidfd)
    # The init is gone; the shim writes the record right after reaping it.
    shim_fd = _pidfd_of(container.state.shim_pid, container.state.shim_start_time)
    pause_s = 0.001
    try:
        while True:
            record = st.read_exit(container.directory)
            if record is not None:
                return record
            if shim_fd is None or (deadline is not None and time.monotonic() >= deadline):
                return st.read_exit(container.directory)
            ready, _w, _x = select.select([shim_fd], [], [], pause_s)
            if ready:  # the shim exited: it wrote the record or never will
                return st.read_exit(container.directory)
            pause_s = min(pause_s * 2, 0.05)
    finally:
        if shim_fd is not None:
            os.close(shim_fd)


def _wait_shim_gone(recorded: st.ContainerState, timeout: float) -> None:
    shim_fd = _pidfd_of(recorded.shim_pid, recorded.shim_start_time)
    if shim_fd is None:
        return
    try:
        ready, _w, _x = select.select([shim_fd], [], [], timeout)
        if not ready:
            _log.warning("container %s: the shim %d is still there", recorded.id, recorded.shim_pid)
    finally:
        os.close(shim_fd)


def delete(container: Container, *, force: bool = False) -> None:
    """Remove a stopped (or created) container: its cgroup and its state directory.

    A running or paused one only with ``force``: every process in its cgroup is killed
    first, and the shim's exit record waited for.
    """
    recorded = container.state
    if container.status in ("running", "paused") and not force:
        raise RuntimeError_(
            f"container {container.id!r} is {container.status}: stop it first, or use --force"
        )
    if recorded is None:
        if not force:
            raise RuntimeError_(f"container {container.id!r} is still being created")
        shutil.rmtree(container.directory, ignore_errors=True)
        return
    if container.status != "stopped":
        # A created one too, as runc: it never ran anything of the user's.
        cgroup = container.cgroup()
        cgroup.kill_all(signal.SIGKILL)
        pidfd = _pidfd_of(recorded.pid, recorded.start_time)
        if pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        wait_exit(container, EXIT_TIMEOUT)
    _wait_shim_gone(recorded, EXIT_TIMEOUT)
    _run_lifecycle_hooks(container, "poststop", "stopped")
    _destroy_cgroup(container.cgroup())
    shutil.rmtree(container.directory)


def _destroy_cgroup(cgroup: Cgroup, timeout: float = EXIT_TIMEOUT) -> None:
    """Remove the container's cgroup, and Gantry's parent cgroup once its last container
    is gone, so nothing of the runtime stays on a host without containers (a parent still
    in use refuses to go: EBUSY)."""
    parents = {path.parent for path in cgroup.paths().values()}
    cgroup.destroy(timeout)
    if posixpath.dirname(cgroup.path) == DEFAULT_PARENT:
        for directory in parents:
            with contextlib.suppress(OSError):
                os.rmdir(directory)
