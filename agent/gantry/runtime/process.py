"""Creating a container's init process from a validated spec (the OCI create/start split).

:func:`create_init` runs in the caller: a per-container supervisor, which becomes a child
subreaper here so that the container's init, orphaned on purpose, is re-parented to it. The
order is the kernel's, as in runc's stages 0/1/2:

- **the runtime** (this process) forks the *first child* and waits for it over a
  ``SOCK_SEQPACKET`` socket pair;
- **the first child** makes itself non-dumpable, resets signals, lays out the container's
  fds (0-2, the extra fds from 3, the socket right after), opens the namespaces to join,
  and, when the container has a user namespace of its own, unshares ``CLONE_NEWUSER``
  *alone*; then it tells the runtime, which
  - adds it to the container's cgroups, so the namespaces created next (the cgroup
    namespace's root above all) and every process forked later are the container's,
  - writes its ``oom_score_adj`` (inherited by the init),
  - writes ``setgroups``, ``uid_map`` and ``gid_map`` of the new user namespace;
- the first child becomes root of its user namespace, joins the namespaces given by path
  (the user namespace first), unshares the other new ones (mount, uts, ipc, network,
  cgroup, time; the runtime writes the time offsets), then the pid namespace last, and
  forks the **init**, which a fork is needed for to be PID 1 of the new pid namespace.
  It sends the init's pid and exits; the init is re-parented to the runtime;
- the runtime opens a pidfd of the init and releases it; the init runs
  :func:`gantry.runtime.init.container_init`. Before it switches to the container's user
  it asks for its rlimits, which the runtime sets with prlimit(2): a hard limit cannot be
  raised from inside a user namespace, and later the ids would differ from the runtime's
  (runc's procReady); the init's own set-up in Python is not held to them. It goes on up
  to the moment before execve and says it is created; :func:`create_init` returns;
- :meth:`InitHandle.start` lets it load seccomp and exec; the socket closing on exec is
  the runtime's sign that it happened. With ``start_fifo`` (runc's ``exec.fifo``) the init
  instead blocks opening that FIFO for writing, and any process may start it by opening
  the FIFO for reading (:func:`open_start_fifo`): the creator may be gone by then.

Every wait has a deadline, every failure is a :class:`ContainerInitError` naming the step,
and a failed creation leaves no process behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import platform
import resource
import select
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISFIFO
from typing import Any, Final, NoReturn

from gantry.linux import caps, ns, prctl, proc
from gantry.linux.seccomp import SockFilter
from gantry.runtime import hooks, security, tini
from gantry.runtime.init import (
    MSG_ACK,
    MSG_CONSOLE,
    MSG_CREATED,
    MSG_ERROR,
    MSG_GO,
    MSG_HOOKS,
    MSG_PID,
    MSG_RLIMITS,
    MSG_STAGE1,
    MSG_START,
    MSG_TIMENS,
    START_FAILED,
    START_OK,
    InitConfig,
    InitStepError,
    SyncChannel,
    container_init,
    report_and_exit,
    step,
)
from gantry.runtime.seccomp import SeccompError, compile_seccomp, filter_flags
from gantry.runtime.spec import RLIMITS, IDMapping, Linux, Spec

__all__ = [
    "DEFAULT_TIMEOUT",
    "ContainerInitError",
    "HostFacts",
    "InitHandle",
    "create_init",
    "exit_status",
    "open_start_fifo",
    "plan_init",
    "run",
]

Log = logging.Logger | logging.LoggerAdapter[Any]

DEFAULT_TIMEOUT: Final = 60.0
"""Seconds :func:`create_init` and :meth:`InitHandle.start` wait for the container's side."""

_REAP_TIMEOUT: Final = 10.0
_log = logging.getLogger(__name__)

_RLIM_INFINITY_U64: Final = 2**64 - 1


class ContainerInitError(InitStepError):
    """Creating or starting the container failed at ``step`` (``rootfs``, ``cwd``,
    ``capabilities``…); ``errno`` is the kernel's when a call failed. The runtime-side
    form of the init's own :class:`InitStepError`."""

    def __str__(self) -> str:
        return f"container init failed at step {self.step}: {self.message}"


def exit_status(wait_status: int) -> int:
    """A wait status in the shell's form: the exit code, or 128 + the signal number."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


# --- planning (pure, before any fork) ---------------------------------------------------------


@dataclass(frozen=True)
class HostFacts:
    """What planning needs to know about the runtime and the kernel."""

    last_cap: int
    held_caps: frozenset[int]
    """Capabilities the runtime can hand on: its bounding set within its permitted set."""
    may_set_groups: bool
    """Whether a new user namespace may keep setgroups(2) allowed: the runtime has
    CAP_SETGID, so it may write a gid map without denying setgroups first."""

    @classmethod
    def probe(cls) -> HostFacts:
        """The facts of this process on this kernel."""
        last = caps.last_cap()
        own = caps.capget()
        held = caps.bounding_set(last) & own.permitted
        may_set_groups = os.geteuid() == 0 and caps.cap_number("CAP_SETGID") in own.effective
        return cls(last, held, may_set_groups)


def _split_env(item: str) -> tuple[str, str, str]:
    return item.partition("=")


def _id_map(mappings: Sequence[IDMapping]) -> str:
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)


def _ignored_features(spec: Spec) -> list[str]:
    process = spec.process
    linux = spec.linux or Linux()
    found: list[tuple[str, object]] = [
        (
            "process.apparmorProfile: AppArmor is not supported",
            process and process.apparmor_profile,
        ),
        ("process.selinuxLabel: SELinux is not supported", process and process.selinux_label),
        ("linux.mountLabel: SELinux is not supported", linux.mount_label),
        ("process.scheduler: not applied yet", process and process.scheduler),
        ("process.ioPriority: not applied yet", process and process.io_priority),
        ("process.execCPUAffinity: not applied yet", process and process.exec_cpu_affinity),
        ("linux.memoryPolicy: not applied yet", linux.memory_policy),
    ]
    return [f"{text}; ignored" for text, present in found if present]


def plan_init(spec: Spec, bundle: Path, host: HostFacts | None = None) -> InitConfig:
    """Decide everything the container's init will do, before anything is forked.

    Raises :class:`ContainerInitError` (step ``spec``, ``capabilities`` or ``seccomp``)
    for a spec this runtime cannot run; unsupported optional features become warnings.
    """
    host = host or HostFacts.probe()
    try:
        spec = tini.with_init(spec)
    except tini.InitBinaryError as exc:
        raise ContainerInitError("init", str(exc)) from None
    process = spec.process
    if process is None:
        raise ContainerInitError("spec", "the spec has no process to run")
    linux = spec.linux or Linux()
    mount_ns = linux.namespace("mount")
    if mount_ns is None or mount_ns.path is not None:
        raise ContainerInitError(
            "spec", "the container needs a new mount namespace (linux.namespaces: mount, no path)"
        )
    if linux.net_devices:
        raise ContainerInitError("spec", "linux.netDevices is not supported")
    if linux.personality is not None:
        raise ContainerInitError("spec", "linux.personality is not supported")
    if linux.seccomp is not None and linux.seccomp.listener_path:
        raise ContainerInitError("seccomp", "linux.seccomp.listenerPath is not supported")

    join: list[tuple[ns.Namespace, str]] = []
    unshare_flags = 0
    new_user = new_pid = new_net = False
    for entry in linux.namespaces:
        kind = ns.Namespace.from_oci(entry.type)
        if entry.path is not None:
            join.append((kind, entry.path))
        elif kind is ns.Namespace.USER:
            new_user = True
        elif kind is ns.Namespace.PID:
            new_pid = True
        else:
            new_net = new_net or kind is ns.Namespace.NET
            unshare_flags |= kind.flag
    # A joined user namespace comes first: it owns (and grants the rights to join) the rest.
    join.sort(key=lambda item: item[0] is not ns.Namespace.USER)

    try:
        plan, cap_warnings = security.plan_capabilities(
            process.capabilities, last_cap=host.last_cap, held=host.held_caps
        )
    except ValueError as exc:
        raise ContainerInitError("capabilities", str(exc)) from None
    warnings = [*spec.warnings, *_ignored_features(spec), *cap_warnings]

    program: tuple[SockFilter, ...] = ()
    seccomp_flags = 0
    if linux.seccomp is not None:
        try:
            compiled, seccomp_warnings = compile_seccomp(linux.seccomp)
        except SeccompError as exc:
            raise ContainerInitError("seccomp", str(exc)) from None
        program = tuple(compiled)
        seccomp_flags = filter_flags(linux.seccomp)
        warnings.extend(f"linux.seccomp: {text}" for text in seccomp_warnings)

    time_offsets = "".join(
        f"{clock} {offset.secs} {offset.nanosecs}\n"
        for clock, offset in sorted(linux.time_offsets.items())
    )
    return InitConfig(
        spec=spec,
        bundle=Path(bundle),
        rootfs=spec.root.path,
        args=process.args,
        env=tuple((key, value) for key, _sep, value in map(_split_env, process.env)),
        cwd=process.cwd,
        new_user_ns=new_user,
        join=tuple(join),
        unshare_flags=unshare_flags,
        new_pid_ns=new_pid,
        new_net_ns=new_net,
        uid_map=_id_map(linux.uid_mappings),
        gid_map=_id_map(linux.gid_mappings),
        deny_setgroups=new_user and not host.may_set_groups,
        time_offsets=time_offsets,
        oom_score_adj=process.oom_score_adj,
        rlimits=tuple((RLIMITS[limit.type], limit.soft, limit.hard) for limit in process.rlimits),
        hostname=spec.hostname,
        domainname=spec.domainname,
        sysctls=tuple(linux.sysctl.items()),
        no_new_privs=process.no_new_privileges,
        username=process.user.username,
        uid=process.user.uid,
        gid=process.user.gid,
        additional_gids=process.user.additional_gids,
        umask=process.user.umask,
        capabilities=plan,
        last_cap=host.last_cap,
        seccomp=program,
        seccomp_flags=seccomp_flags,
        seccomp_early=bool(program)
        and security.seccomp_goes_early(no_new_privs=process.no_new_privileges, plan=plan),
        warnings=tuple(warnings),
        terminal=process.terminal,
        console_size=(
            (process.console_size.height, process.console_size.width)
            if process.console_size is not None
            else None
        ),
        create_hooks=any(
            hooks.hooks_of(spec.hooks, kind)
            for kind in ("prestart", "createRuntime", "createContainer")
        ),
    )


# --- the first child (runc's stage 1) ---------------------------------------------------------


def _reset_signals() -> None:
    # The caller's Python handlers must never run in here, and execve keeps ignored
    # signals ignored (Python ignores SIGPIPE): every disposition back to the default,
    # nothing blocked.
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        if signal.getsignal(signum) is not signal.SIG_DFL:
            with contextlib.suppress(OSError, ValueError):
                signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _lay_out_fds(
    channel: SyncChannel, stdio: Sequence[int], extra_fds: Sequence[int], fifo_fd: int = -1
) -> None:
    """Make ``stdio`` fds 0-2 and ``extra_fds`` 3.., put the socket right after them (and
    the exec.fifo handle ``fifo_fd``, if any, after the socket, close-on-exec), and close
    everything else the caller had open."""
    sources = [*stdio, *extra_fds]
    count = len(sources)
    # Everything moves above every number in play first, so no dup2 onto 0..count below
    # can clobber a source or the socket.
    floor = max([*sources, channel.fileno(), fifo_fd, count + 1, 2]) + 1
    channel.move_to(fcntl.fcntl(channel.fileno(), fcntl.F_DUPFD_CLOEXEC, floor))
    fifo_copy = fcntl.fcntl(fifo_fd, fcntl.F_DUPFD_CLOEXEC, floor) if fifo_fd >= 0 else -1
    copies = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in sources]
    for target, fd in enumerate(copies):
        os.dup2(fd, target, inheritable=True)
    channel.move_to(count)
    if fifo_copy >= 0:
        os.dup2(fifo_copy, count + 1, inheritable=False)
        proc.close_range(count + 2)
    else:
        proc.close_range(count + 1)


def _open_namespaces(join: Sequence[tuple[ns.Namespace, str]]) -> list[tuple[ns.Namespace, int]]:
    # All opened before any is joined: after joining a mount or user namespace the host
    # paths may no longer resolve, or no longer be ours to open.
    return [(kind, os.open(path, os.O_RDONLY | os.O_CLOEXEC)) for kind, path in join]


def _become_namespace_root() -> None:
    # Root of the user namespace: the ids the init's set-up (mounts, files) runs as.
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def _join_namespaces(opened: Sequence[tuple[ns.Namespace, int]]) -> None:
    for kind, fd in opened:
        try:
            ns.setns(fd, kind)
        except OSError as exc:
            raise OSError(exc.errno, f"setns {kind.oci_name}: {exc.strerror}") from None
        finally:
            os.close(fd)
        if kind is ns.Namespace.USER:
            _become_namespace_root()


def _first_child(
    config: InitConfig,
    channel: SyncChannel,
    stdio: Sequence[int],
    extra_fds: Sequence[int],
    fifo_fd: int = -1,
) -> NoReturn:
    """runc's stage 1: namespaces, then the fork that makes the init PID 1. Never returns."""
    try:
        with step("fork"):
            # Non-dumpable until the container's execve replaces this image: nothing in the
            # container may open /proc/<pid>/exe, the host's python (CVE-2019-5736).
            prctl.set_dumpable(False)
            _reset_signals()
            _lay_out_fds(channel, stdio, extra_fds, fifo_fd)
        with step("join-namespaces"):
            opened = _open_namespaces(config.join)
        if config.new_user_ns:
            with step("user-namespace"):
                ns.unshare(ns.CLONE_NEWUSER)  # alone: the maps must exist before the rest
        with step("sync"):
            channel.send(MSG_STAGE1)
            channel.expect(MSG_ACK)  # in the cgroups, oom_score_adj and id maps written
        if config.new_user_ns:
            with step("user-namespace"):
                _become_namespace_root()
        with step("join-namespaces"):
            _join_namespaces(opened)
        with step("unshare"):
            if config.unshare_flags:
                ns.unshare(config.unshare_flags)
        if config.time_offsets:
            with step("sync"):
                channel.send(MSG_TIMENS)  # offsets must be set before the first child
                channel.expect(MSG_ACK)
        with step("unshare"):
            if config.new_pid_ns:
                ns.unshare(ns.CLONE_NEWPID)
        with step("fork-init"):
            pid = os.fork()
        if pid == 0:
            container_init(config, channel)
        with step("sync"):
            channel.send(MSG_PID, pid=pid)
    except InitStepError as failure:
        report_and_exit(channel, failure)
    except BaseException as exc:
        report_and_exit(channel, InitStepError("internal", f"{type(exc).__name__}: {exc}"))
    os._exit(0)


# --- the runtime's side -----------------------------------------------------------------------


def _write_proc(path: str, text: str) -> None:
    # One write(2): the kernel takes an id map or a cgroup.procs entry only whole.
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _rlimit_value(value: int) -> int:
    return resource.RLIM_INFINITY if value == _RLIM_INFINITY_U64 else value


def _children() -> set[int]:
    found: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with (
            contextlib.suppress(FileNotFoundError, ProcessLookupError),
            open(f"/proc/self/task/{task}/children") as f,
        ):
            found.update(int(pid) for pid in f.read().split())
    return found


def _wait_readable(fds: Sequence[int], deadline: float) -> list[int]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return []
    ready, _unused_w, _unused_x = select.select(list(fds), [], [], remaining)
    return ready


def _reap(pid: int, pidfd: int, deadline: float | None) -> int | None:
    """Wait for child ``pid`` to exit and reap it; its wait status, or ``None`` when it is
    still running at ``deadline`` (``None``: no deadline) or was reaped already."""
    if deadline is not None:
        if pidfd < 0:
            with contextlib.suppress(ProcessLookupError):
                return _reap_with_pidfd(pid, deadline)
            return None
        if not _wait_readable([pidfd], deadline):
            return None
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def _reap_with_pidfd(pid: int, deadline: float) -> int | None:
    # Only for our own unreaped children: their pid cannot name another process.
    pidfd = proc.pidfd_open(pid)
    try:
        return _reap(pid, pidfd, deadline)
    finally:
        os.close(pidfd)


def _kill_and_reap(pid: int, deadline: float) -> None:
    """SIGKILL our child ``pid`` (not reaped yet, so the pid is still its) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if _reap(pid, -1, deadline) is None and _alive(pid):
        _log.error("container init: process %d did not die within %ss", pid, _REAP_TIMEOUT)


def _alive(pid: int) -> bool:
    try:
        return proc.read_stat(pid).state != "Z"
    except ProcessLookupError:
        return False


def _describe_status(status: int | None) -> str:
    if status is None:
        return "it is still running"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class _Creation:
    """The runtime's half of one creation: the processes it has made so far, so that a
    failure can be named and cleaned up."""

    def __init__(
        self,
        config: InitConfig,
        channel: SyncChannel,
        first: int,
        timeout: float,
        container_id: str = "",
    ):
        self.config = config
        self.channel = channel
        self.timeout = timeout
        self.container_id = container_id
        self.deadline = time.monotonic() + timeout
        self.first_pid = first
        self.first_pidfd = -1
        self.first_reaped = False
        self.init_pid = -1
        self.init_pidfd = -1
        self.console_fd = -1

    @staticmethod
    @contextlib.contextmanager
    def host_step(name: str) -> Iterator[None]:
        """A step the runtime does itself: its OSError becomes a ContainerInitError."""
        try:
            yield
        except OSError as exc:
            raise ContainerInitError(name, exc.strerror or str(exc), exc.errno) from None

    def expect(self, kind: str, watch: int, step_name: str) -> dict[str, Any]:
        """The next message, which must be ``kind``; the process behind the pidfd
        ``watch`` exiting without a word, or the deadline, is an error of ``step_name``."""
        fd = self.channel.fileno()
        while True:
            ready = _wait_readable([fd, watch], self.deadline)
            if not ready:
                raise ContainerInitError(step_name, f"timed out waiting for {kind!r}")
            if fd in ready or self._has_message():
                message = self.channel.receive()
                break
            if watch in ready:
                status = self._status_of(watch)
                raise ContainerInitError(step_name, f"the container's process died ({status})")
        if message is None:
            status = self._status_of(watch)
            raise ContainerInitError(
                step_name, f"the container's process ended without a word ({status})"
            )
        if message.get("type") == MSG_ERROR:
            raise ContainerInitError(
                str(message.get("step")), str(message.get("message")), message.get("errno")
            )
        if message.get("type") != kind:
            raise ContainerInitError(step_name, f"expected {kind!r}, got {message!r}")
        return message

    def _has_message(self) -> bool:
        ready, _unused_w, _unused_x = select.select([self.channel.fileno()], [], [], 0)
        return bool(ready)

    def _status_of(self, pidfd: int) -> str:
        pid = self.first_pid if pidfd == self.first_pidfd else self.init_pid
        status = _reap(pid, pidfd, time.monotonic() + 1.0)
        if pidfd == self.first_pidfd:
            self.first_reaped = status is not None
        return _describe_status(status)

    def run(self, cgroup_procs: Sequence[Path]) -> InitHandle:
        config = self.config
        first = self.first_pid
        with self.host_step("fork"):
            self.first_pidfd = proc.pidfd_open(first)
        self.expect(MSG_STAGE1, self.first_pidfd, "fork")
        with self.host_step("cgroup"):
            for path in cgroup_procs:
                _write_proc(os.fspath(path), f"{first}\n")
        if config.oom_score_adj is not None:
            with self.host_step("oom-score"):
                _write_proc(f"/proc/{first}/oom_score_adj", f"{config.oom_score_adj}\n")
        if config.new_user_ns:
            with self.host_step("user-namespace"):
                if config.deny_setgroups:
                    _write_proc(f"/proc/{first}/setgroups", "deny")
                _write_proc(f"/proc/{first}/uid_map", config.uid_map)
                _write_proc(f"/proc/{first}/gid_map", config.gid_map)
        self.channel.send(MSG_ACK)
        if config.time_offsets:
            self.expect(MSG_TIMENS, self.first_pidfd, "unshare")
            with self.host_step("time-offsets"):
                _write_proc(f"/proc/{first}/timens_offsets", config.time_offsets)
            self.channel.send(MSG_ACK)
        message = self.expect(MSG_PID, self.first_pidfd, "fork-init")
        self.init_pid = int(message["pid"])
        status = _reap(first, self.first_pidfd, self.deadline)
        self.first_reaped = status is not None
        if status != 0:
            raise ContainerInitError(
                "fork-init", f"the first child failed ({_describe_status(status)})"
            )
        with self.host_step("fork-init"):
            self.init_pidfd = proc.pidfd_open(self.init_pid)
            stat = proc.read_stat(self.init_pid)
        if stat.ppid != os.getpid():
            raise ContainerInitError(
                "fork-init",
                f"the init {self.init_pid} was not re-parented to the runtime (parent {stat.ppid})",
            )
        state = None
        if config.spec.hooks is not None:
            state = hooks.hook_state(
                config.spec,
                self.container_id,
                status="creating",
                pid=self.init_pid,
                bundle=os.fspath(config.bundle),
            )
        self.channel.send(MSG_GO, state=state)
        if config.create_hooks:
            self.expect(MSG_HOOKS, self.init_pidfd, "hooks")
            assert state is not None
            try:
                # In the runtime's namespaces, with the container's made and its mounts
                # in place, before pivot_root (runtime-spec config.md; runc's procHooks).
                for kind in ("prestart", "createRuntime"):
                    hooks.run_hooks(hooks.hooks_of(config.spec.hooks, kind), kind, state)
            except hooks.HookError as exc:
                raise ContainerInitError("hooks", str(exc)) from None
            self.deadline = time.monotonic() + self.timeout  # hooks have their own timeouts
            self.channel.send(MSG_ACK)
        if config.terminal:
            self.expect(MSG_CONSOLE, self.init_pidfd, "console")
            self.console_fd = self.channel.take_fd()
        if config.rlimits:
            self.expect(MSG_RLIMITS, self.init_pidfd, "init")
            with self.host_step("rlimits"):
                for number, soft, hard in config.rlimits:
                    limits = (_rlimit_value(soft), _rlimit_value(hard))
                    resource.prlimit(self.init_pid, number, limits)
            self.channel.send(MSG_ACK)
        self.expect(MSG_CREATED, self.init_pidfd, "init")
        handle = InitHandle(
            pid=self.init_pid,
            start_time=stat.start_time,
            pidfd=self.init_pidfd,
            channel=self.channel,
            warnings=config.warnings,
        )
        handle.console_fd, self.console_fd = self.console_fd, -1
        self.init_pidfd = -1  # the handle owns it now
        os.close(self.first_pidfd)
        self.first_pidfd = -1
        return handle

    def abort(self, children_before: set[int]) -> None:
        """Kill and reap whatever this creation forked; release its fds."""
        for pidfd in (self.init_pidfd, -1 if self.first_reaped else self.first_pidfd):
            if pidfd >= 0:
                with contextlib.suppress(ProcessLookupError):
                    proc.pidfd_send_signal(pidfd, signal.SIGKILL)
        self.channel.close()  # an init that was not announced yet reads EOF and exits
        deadline = time.monotonic() + _REAP_TIMEOUT
        if not self.first_reaped:
            _kill_and_reap(self.first_pid, deadline)
        # Once the first child is gone, the init (announced or not) is our own child.
        for pid in _children() - children_before:
            _kill_and_reap(pid, deadline)
        for fd in (self.init_pidfd, self.first_pidfd, self.console_fd):
            if fd >= 0:
                os.close(fd)


def create_init(
    spec: Spec,
    *,
    bundle: Path,
    stdio: Sequence[int] = (0, 1, 2),
    extra_fds: Sequence[int] = (),
    cgroup_procs: Sequence[Path] = (),
    start_fifo: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    log: Log | None = None,
    container_id: str = "",
) -> InitHandle:
    """Create the container's init from ``spec``, set up and waiting for :meth:`start`.

    ``stdio`` become the container's fds 0-2 and ``extra_fds`` its fds 3 and up.
    ``cgroup_procs`` are the ``cgroup.procs`` files of the container's cgroups. With
    ``start_fifo`` (an existing FIFO, runc's ``exec.fifo``) the created init waits for
    whoever opens that FIFO for reading (:func:`open_start_fifo`, from any process)
    instead of :meth:`InitHandle.start`'s message, so the caller may go away. The caller
    must be single-threaded; it becomes a child subreaper (PR_SET_CHILD_SUBREAPER), which
    the init's re-parenting relies on. Raises :class:`ContainerInitError` naming the step
    that failed; nothing of the container is left then.

    With ``process.terminal`` the handle's ``console_fd`` is the master of the container's
    pty (the caller owns it). The spec's prestart and createRuntime hooks run here, in the
    caller, with ``container_id`` in their state; createContainer and startContainer hooks
    run in the init (:mod:`gantry.runtime.hooks`).
    """
    log = log or _log
    if len(stdio) != 3:
        raise ValueError(f"stdio is three fds (stdin, stdout, stderr), not {len(stdio)}")
    config = plan_init(spec, Path(bundle))
    if start_fifo is not None:
        config = dataclasses.replace(config, start_fifo=True)
    for warning in config.warnings:
        log.warning("container init: %s", warning)
    platform.machine()  # cached now: the syscall wrappers ask for it after pivot_root
    if not prctl.get_child_subreaper():
        prctl.set_child_subreaper(True)
    children_before = _children()
    fifo_fd = -1
    if start_fifo is not None:
        # Opened here, on the host and as the runtime: the init reopens it through
        # /proc/self/fd once its root has moved (and maybe its ids with it).
        try:
            fifo_fd = os.open(start_fifo, os.O_PATH | os.O_CLOEXEC)
        except OSError as exc:
            raise ContainerInitError(
                "start-fifo", f"{start_fifo}: {exc.strerror or exc}", exc.errno
            ) from None
        if not S_ISFIFO(os.fstat(fifo_fd).st_mode):
            os.close(fifo_fd)
            raise ContainerInitError("start-fifo", f"{start_fifo} is not a FIFO")
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid = os.fork()
    except OSError as exc:
        parent_sock.close()
        child_sock.close()
        if fifo_fd >= 0:
            os.close(fifo_fd)
        raise ContainerInitError("fork", exc.strerror or str(exc), exc.errno) from None
    if pid == 0:  # the first child: never returns
        try:
            parent_sock.close()
            _first_child(config, SyncChannel(child_sock), stdio, extra_fds, fifo_fd)
        finally:
            os._exit(1)
    child_sock.close()
    if fifo_fd >= 0:
        os.close(fifo_fd)
    creation = _Creation(config, SyncChannel(parent_sock), pid, timeout, container_id)
    try:
        handle = creation.run(cgroup_procs)
    except BaseException:
        creation.abort(children_before)
        raise
    handle.start_fifo = start_fifo
    return handle


def open_start_fifo(fifo: Path, pidfd: int, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Start a created init that waits on ``fifo``: open the FIFO for reading, which lets
    the init's open for writing through, read its byte, and wait for the FIFO's end,
    which the init's execve closes: on return the program runs.

    ``pidfd`` is the init's: its exit before the byte arrives is an error (a plain
    blocking open would wait forever for a writer that is gone). Raises
    :class:`ContainerInitError` (step ``start``); ``FileNotFoundError`` when the FIFO is
    gone (started already).
    """
    # Non-blocking, so the open itself never waits; a FIFO nobody has opened for writing
    # yet is simply not readable (no POLLHUP before a first writer).
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + timeout
        while True:
            ready = _wait_readable([reader, pidfd], deadline)
            if not ready:
                raise ContainerInitError("start", f"no start within {timeout:g}s")
            if reader in ready:
                try:
                    data = os.read(reader, 1)
                except BlockingIOError:
                    continue
                if data == START_OK:
                    _wait_for_exec(reader, deadline)
                    return
                if data == START_FAILED:
                    raise ContainerInitError("start", _read_reason(reader, deadline))
                # EOF: a writer came and went without its byte; it died in between.
                raise ContainerInitError("start", "the container's init exited while starting")
            if pidfd in ready:
                raise ContainerInitError("start", "the container's init exited before start")
    finally:
        os.close(reader)


def _wait_for_exec(reader: int, deadline: float) -> None:
    """After the init's byte: wait for the end of the FIFO, which its execve closes (or its
    death: then the program's failure shows in its exit status)."""
    while _wait_readable([reader], deadline):
        try:
            if not os.read(reader, 4096):
                return
        except BlockingIOError:
            continue
    raise ContainerInitError("start", "the container's init did not exec its program in time")


def _read_reason(reader: int, deadline: float) -> str:
    """The rest of a failed start's word on the FIFO, up to EOF (the init has closed it)."""
    text = b""
    while _wait_readable([reader], deadline):
        try:
            chunk = os.read(reader, 4096)
        except BlockingIOError:
            continue
        if not chunk:
            break
        text += chunk
    return text.decode(errors="replace") or "the container failed to start"


# --- the created container --------------------------------------------------------------------


class InitHandle:
    """A created container init: set up, waiting for :meth:`start` right before execve.

    ``pid`` is the host pid, ``start_time`` its ``/proc/<pid>/stat`` start time (the pair
    names the process even after its pid is reused). Close the handle (or leave its
    ``with`` block) when done: an init that is still running is then killed and reaped.
    """

    def __init__(
        self,
        *,
        pid: int,
        start_time: int,
        pidfd: int,
        channel: SyncChannel,
        warnings: tuple[str, ...] = (),
    ) -> None:
        self.pid = pid
        self.start_time = start_time
        self.pidfd = pidfd
        self.warnings = warnings
        self.wait_status: int | None = None
        self.console_fd = -1
        """The master of the container's pty (``process.terminal``): the caller's to take
        and close; -1 when there is none."""
        self.start_fifo: Path | None = None
        """The exec.fifo the init waits on, when it was created with one."""
        self._channel: SyncChannel | None = channel
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Let the init load seccomp and execve the container's program.

        Returns once the exec happened (the sync socket closed). A failure of the last
        steps (seccomp, exec) raises :class:`ContainerInitError`; the init is then reaped.
        """
        if self._started or self._channel is None:
            raise RuntimeError("the container init was started already")
        self._started = True
        channel = self._channel
        deadline = time.monotonic() + timeout
        try:
            if self.start_fifo is not None:
                open_start_fifo(self.start_fifo, self.pidfd, timeout)
            else:
                try:
                    channel.send(MSG_START)
                except OSError as exc:
                    raise ContainerInitError("start", f"the init is gone: {exc.strerror}") from None
            if not _wait_readable([channel.fileno()], deadline):
                raise ContainerInitError("start", f"no exec within {timeout}s")
            message = channel.receive()
        finally:
            channel.close()
            self._channel = None
        if message is not None:
            self._reap(time.monotonic() + _REAP_TIMEOUT)
            if message.get("type") == MSG_ERROR:
                raise ContainerInitError(
                    str(message.get("step")), str(message.get("message")), message.get("errno")
                )
            raise ContainerInitError("start", f"unexpected message {message!r}")

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the init to exit, reap it, and return its status in the shell's form
        (128 + signal when killed). ``TimeoutError`` when it outlives ``timeout``."""
        if self.wait_status is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            if not self._reap(deadline):
                raise TimeoutError(f"container init {self.pid} still runs after {timeout}s")
        assert self.wait_status is not None
        return exit_status(self.wait_status)

    def _reap(self, deadline: float | None) -> bool:
        if self.wait_status is not None:
            return True
        status = _reap(self.pid, self.pidfd, deadline)
        if status is None:
            return False
        self.wait_status = status
        return True

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the init (never to a reused pid: through the pidfd)."""
        if self.wait_status is None:
            proc.pidfd_send_signal(self.pidfd, sig)

    def close(self) -> None:
        """Kill and reap an init still running, and release the handle's fds (the pty
        master too, unless the caller took it)."""
        if self.console_fd >= 0:
            os.close(self.console_fd)
            self.console_fd = -1
        if self.pidfd >= 0:
            if self.wait_status is None:
                # SIGKILL before the socket closes: an unstarted init reading EOF would
                # otherwise exit on its own, with a status that depends on who won.
                with contextlib.suppress(ProcessLookupError):
                    proc.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                self._reap(time.monotonic() + _REAP_TIMEOUT)
            os.close(self.pidfd)
            self.pidfd = -1
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> InitHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def run(
    spec: Spec,
    bundle: Path,
    *,
    stdio: Sequence[int] = (0, 1, 2),
    timeout: float | None = None,
    log: Log | None = None,
) -> int:
    """Create, start and wait for a container; its exit status in the shell's form.

    For tests and one-shot use: like :func:`create_init`, the caller becomes a child
    subreaper.
    """
    with create_init(spec, bundle=bundle, stdio=stdio, log=log) as handle:
        handle.start()
        return handle.wait(timeout)
