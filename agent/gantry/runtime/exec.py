"""Running another process in a running container (``gantry-runtime exec``; the agent's
exec).

:func:`exec_process` is runc's ``exec`` (its ``setnsProcess`` and ``linuxSetnsInit``), in
the order the kernel needs:

- the **runtime** (the caller) checks the container is running, not paused, and opens a
  pidfd of its init, checked against the recorded start time; it opens the init's
  ``/proc/<pid>/ns/*`` files of every namespace that differs from its own, and only then
  makes sure the init is still alive (a live process's pid cannot have been reused, so
  the files are the container's);
- the **first child** makes itself non-dumpable (CVE-2019-5736: the host's python must
  not be reachable through ``/proc/<pid>/exe``), joins the container's cgroups (writing
  ``0`` to each ``cgroup.procs``: itself, from the host side of every namespace), sets
  its ``oom_score_adj``, joins the namespaces, the user namespace first (it grants the
  rights to join the others), lays out the fds and forks: a fork is needed to be inside
  the pid (and time) namespace. It reports the pid and exits; the process is re-parented
  to the runtime, a child subreaper;
- the **process** starts a session, allocates its pty from the container's devpts when
  ``process.terminal`` (the master goes back to the runtime over the sync socket), sets
  no_new_privs, resolves its user from the container's own ``/etc/passwd``, has its
  rlimits set from outside by the runtime (prlimit: a hard limit cannot be raised from
  inside a user namespace), loads seccomp early when it must, drops the bounding set,
  switches user, sets the capabilities, checks its cwd, closes every other fd, loads
  seccomp last and execs. The sync socket closing on exec is the runtime's sign it
  happened; a failed step comes back as a :class:`ContainerInitError` naming it.

The process's settings default to the container's own, from the spec saved at create
(:mod:`gantry.runtime.saved`): its capabilities, no_new_privs, seccomp profile,
rlimits, user, environment and cwd; :func:`exec_spec` overrides them the way runc's
flags do. AppArmor and SELinux are not supported (warned about at create).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from gantry.linux import ns, prctl, proc
from gantry.linux.seccomp import SockFilter
from gantry.runtime import saved, security
from gantry.runtime.init import (
    MSG_ACK,
    MSG_CONSOLE,
    MSG_ERROR,
    MSG_GO,
    MSG_PID,
    MSG_RLIMITS,
    InitConfig,
    InitStepError,
    SyncChannel,
    become_process,
    close_inherited_fds,
    load_seccomp,
    report_and_exit,
    setup_console,
    step,
)
from gantry.runtime.process import (
    DEFAULT_TIMEOUT,
    ContainerInitError,
    HostFacts,
    InitHandle,
    Log,
    _children,
    _Creation,
    _join_namespaces,
    _lay_out_fds,
    _reap,
    _reset_signals,
    _rlimit_value,
    _split_env,
    _wait_readable,
    _write_proc,
)
from gantry.runtime.seccomp import SeccompError, compile_seccomp, filter_flags
from gantry.runtime.spec import RLIMITS, Capabilities, Process, Spec, SpecError, User, load_spec
from gantry.runtime.supervisor import Container

__all__ = [
    "ExecError",
    "ExecHandle",
    "ExecStepError",
    "exec_process",
    "exec_spec",
    "load_process_file",
    "plan_exec",
]

_NS_ORDER: Final = (
    ns.Namespace.USER,  # first: it owns the others and grants the rights to join them
    ns.Namespace.CGROUP,
    ns.Namespace.IPC,
    ns.Namespace.UTS,
    ns.Namespace.NET,
    ns.Namespace.PID,
    ns.Namespace.TIME,
    ns.Namespace.MOUNT,  # last: it moves our root and cwd into the container
)


class ExecError(Exception):
    """The process cannot be run in this container (stopped, paused, no saved spec, a
    bad process.json); the message says why, naming the container or the field."""


class ExecStepError(ContainerInitError):
    """Setting the exec'd process up failed at ``step``."""

    def __str__(self) -> str:
        return f"exec failed at step {self.step}: {self.message}"


# --- what to run ------------------------------------------------------------------------------


def load_process_file(path: Path) -> Process:
    """A ``process.json`` (``--process``): the OCI ``process`` object, validated by the
    same model as config.json; :class:`ExecError` naming the bad field."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ExecError(f"--process {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ExecError(f"--process {path}: not valid JSON: {exc}") from None
    try:
        spec = load_spec({"ociVersion": "1.0.0", "root": {"path": "rootfs"}, "process": data})
    except SpecError as exc:
        raise ExecError(f"--process {path}: {exc}") from None
    assert spec.process is not None
    return spec.process


def exec_spec(
    base: Process,
    *,
    args: Sequence[str] = (),
    env: Sequence[str] = (),
    cwd: str | None = None,
    user: str | None = None,
    additional_gids: Sequence[int] = (),
    add_caps: Sequence[str] = (),
    no_new_privs: bool = False,
    terminal: bool | None = None,
) -> Process:
    """The process ``exec`` runs: the container's ``base`` process with runc's overrides.

    ``args`` replace the arguments, ``env`` entries are added (a later one wins),
    ``user`` is ``uid[:gid]`` or a name, ``add_caps`` join the bounding, effective and
    permitted sets (and ambient when the container has inheritable ones, as runc's
    ``--cap``), ``no_new_privs`` can only turn it on. Raises :class:`ExecError` naming the
    flag for a value the spec model refuses.
    """
    changes: dict[str, Any] = {}
    if args:
        changes["args"] = tuple(args)
    if env:
        changes["env"] = (*base.env, *env)
    if cwd is not None:
        changes["cwd"] = cwd
    if user is not None:
        changes["user"] = _user_of(user, additional_gids)
    elif additional_gids:
        changes["user"] = dataclasses.replace(
            base.user, additional_gids=(*base.user.additional_gids, *additional_gids)
        )
    if add_caps:
        current = base.capabilities or Capabilities()
        names = tuple(_cap_name(name) for name in add_caps)
        changes["capabilities"] = dataclasses.replace(
            current,
            bounding=_add(current.bounding, names),
            effective=_add(current.effective, names),
            permitted=_add(current.permitted, names),
            ambient=_add(current.ambient, names) if current.inheritable else current.ambient,
        )
    if no_new_privs:
        changes["no_new_privileges"] = True
    if terminal is not None:
        changes["terminal"] = terminal
    process = dataclasses.replace(base, **changes)
    # Validate the result with the model, so a bad --cwd or --env is named like a bad field.
    try:
        spec = load_spec(
            {"ociVersion": "1.0.0", "root": {"path": "rootfs"}, "process": process.to_dict()}
        )
    except SpecError as exc:
        raise ExecError(str(exc)) from None
    assert spec.process is not None
    return spec.process


def _user_of(text: str, additional_gids: Sequence[int]) -> User:
    uid_text, _sep, gid_text = text.partition(":")
    if uid_text.isdigit() and (not gid_text or gid_text.isdigit()):
        return User(
            uid=int(uid_text),
            gid=int(gid_text or 0),
            additional_gids=tuple(additional_gids),
            username=text if not gid_text else None,
        )
    if not uid_text:
        raise ExecError(f"--user {text!r}: expected uid[:gid] or a user name")
    # A name: resolved in the container's /etc/passwd, as process.user.username.
    return User(uid=0, gid=0, additional_gids=tuple(additional_gids), username=text)


def _cap_name(name: str) -> str:
    upper = name.strip().upper()
    return upper if upper.startswith("CAP_") else f"CAP_{upper}"


def _add(current: tuple[str, ...], names: tuple[str, ...]) -> tuple[str, ...]:
    return (*current, *(name for name in names if name not in current))


# --- planning ---------------------------------------------------------------------------------


def plan_exec(
    spec: Spec, process: Process, bundle: Path, host: HostFacts | None = None
) -> InitConfig:
    """Everything the exec'd process does, decided before anything is forked: its
    capabilities and seccomp profile (the container's, ``spec.linux.seccomp``), user,
    environment, rlimits. Raises :class:`ContainerInitError` (step ``capabilities`` or
    ``seccomp``)."""
    host = host or HostFacts.probe()
    try:
        plan, cap_warnings = security.plan_capabilities(
            process.capabilities, last_cap=host.last_cap, held=host.held_caps
        )
    except ValueError as exc:
        raise ContainerInitError("capabilities", str(exc)) from None
    program: tuple[SockFilter, ...] = ()
    seccomp_flags = 0
    linux = spec.linux
    if linux is not None and linux.seccomp is not None:
        try:
            compiled, _seccomp_warnings = compile_seccomp(linux.seccomp)
        except SeccompError as exc:
            raise ContainerInitError("seccomp", str(exc)) from None
        program = tuple(compiled)
        seccomp_flags = filter_flags(linux.seccomp)
    user_ns = spec.namespace("user")
    return InitConfig(
        spec=spec,
        bundle=bundle,
        rootfs=spec.root.path,
        args=process.args,
        env=tuple((key, value) for key, _sep, value in map(_split_env, process.env)),
        cwd=process.cwd,
        oom_score_adj=process.oom_score_adj,
        rlimits=tuple((RLIMITS[limit.type], limit.soft, limit.hard) for limit in process.rlimits),
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
        # A new user namespace of the container's own was created by a runtime that may
        # have had to deny setgroups; setgroups then fails, so do not try.
        deny_setgroups=user_ns is not None and user_ns.path is None and not host.may_set_groups,
        warnings=tuple(cap_warnings),
        terminal=process.terminal,
        console_size=(
            (process.console_size.height, process.console_size.width)
            if process.console_size is not None
            else None
        ),
    )


# --- inside the container ---------------------------------------------------------------------


def _first_child(
    config: InitConfig,
    channel: SyncChannel,
    stdio: Sequence[int],
    extra_fds: Sequence[int],
    opened: Sequence[tuple[ns.Namespace, int]],
    cgroup_procs: Sequence[str],
) -> NoReturn:
    """Cgroups, namespaces, the fork into the pid namespace. Never returns."""
    try:
        with step("fork"):
            prctl.set_dumpable(False)
            _reset_signals()
        with step("cgroup"):
            for path in cgroup_procs:
                _write_proc(path, "0\n")  # "0": the writer itself
        if config.oom_score_adj is not None:
            with step("oom-score"):
                _write_proc("/proc/self/oom_score_adj", f"{config.oom_score_adj}\n")
        with step("join-namespaces"):
            _join_namespaces(opened)
        with step("fds"):
            _lay_out_fds(channel, stdio, extra_fds)
        with step("fork-init"):
            pid = os.fork()
        if pid == 0:
            exec_init(config, channel)
        with step("sync"):
            channel.send(MSG_PID, pid=pid)
    except InitStepError as failure:
        report_and_exit(channel, failure)
    except BaseException as exc:
        report_and_exit(channel, InitStepError("internal", f"{type(exc).__name__}: {exc}"))
    os._exit(0)


def exec_init(config: InitConfig, channel: SyncChannel) -> NoReturn:
    """The exec'd process, inside every namespace of the container: set up, execve."""
    try:
        with step("sync"):
            channel.expect(MSG_GO)
        with step("session"):
            os.setsid()
        if config.terminal:
            with step("console"):
                setup_console(channel, config.console_size, bind_console=False)
        executable, environ = become_process(config, channel)
        with step("fds"):
            close_inherited_fds(channel)
        if config.seccomp and not config.seccomp_early:
            with step("seccomp"):
                load_seccomp(config)
        with step("exec"):
            os.execve(executable, config.args, environ)
        raise InitStepError("exec", "execve returned")
    except InitStepError as failure:
        report_and_exit(channel, failure)
    except BaseException as exc:
        report_and_exit(channel, InitStepError("internal", f"{type(exc).__name__}: {exc}"))


# --- the runtime's side -----------------------------------------------------------------------


class ExecHandle(InitHandle):
    """An exec'd process, running its program. :meth:`wait` reaps it (the caller is its
    parent); :meth:`release` lets it go without killing it (``exec --detach``)."""

    def release(self) -> None:
        """Close the handle's fds and leave the process running (the host's init, or a
        subreaper above the caller, reaps it once the caller is gone)."""
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        if self.console_fd >= 0:
            os.close(self.console_fd)
            self.console_fd = -1


def _check_status(container: Container) -> None:
    if container.state is None:
        raise ExecError(f"container {container.id!r} is still being created: cannot exec")
    if container.status == "paused":
        raise ExecError(f"container {container.id!r} is paused: resume it before exec")
    if container.status != "running":
        raise ExecError(
            f"container {container.id!r} is {container.status}, not running: cannot exec"
        )


def _container_pidfd(container: Container) -> int:
    _check_status(container)
    assert container.state is not None
    try:
        pidfd = proc.pidfd_open(container.state.pid)
    except ProcessLookupError:
        raise ExecError(f"container {container.id!r} is stopped: cannot exec") from None
    try:
        same = proc.read_stat(container.state.pid).start_time == container.state.start_time
    except (ProcessLookupError, FileNotFoundError):
        same = False
    if not same:
        os.close(pidfd)
        raise ExecError(f"container {container.id!r} is stopped: cannot exec")
    return pidfd


def _open_container_namespaces(pid: int) -> list[tuple[ns.Namespace, int]]:
    """Fds of the init's namespaces that differ from ours, in the order to join them."""
    opened: list[tuple[ns.Namespace, int]] = []
    try:
        for kind in _NS_ORDER:
            try:
                theirs = os.stat(ns.ns_path(pid, kind))
            except FileNotFoundError:
                continue  # a namespace type this kernel does not have
            if theirs.st_ino == os.stat(ns.ns_path("self", kind)).st_ino:
                continue  # shared with the host (and setns into our own user ns is EINVAL)
            fd = os.open(ns.ns_path(pid, kind), os.O_RDONLY | os.O_CLOEXEC)
            if os.fstat(fd).st_ino != theirs.st_ino:
                os.close(fd)
                raise ProcessLookupError(f"process {pid} changed while its namespaces were opened")
            opened.append((kind, fd))
    except BaseException:
        for _kind, fd in opened:
            os.close(fd)
        raise
    return opened


def exec_process(
    container: Container,
    process: Process,
    *,
    stdio: Sequence[int] = (0, 1, 2),
    extra_fds: Sequence[int] = (),
    timeout: float = DEFAULT_TIMEOUT,
    log: Log | None = None,
) -> ExecHandle:
    """Run ``process`` in the running ``container`` (its namespaces, cgroups and
    security settings, see the module); return once it has exec'd its program.

    ``stdio`` become its fds 0-2 and ``extra_fds`` its fds 3 and up (runc's
    ``--preserve-fds``). With ``process.terminal`` the handle's ``console_fd`` is the
    master of its pty, the caller's to take. The caller must be single-threaded and
    becomes a child subreaper (the process is re-parented to it). Raises
    :class:`ExecError` (the container cannot take an exec) or
    :class:`ContainerInitError` naming the failed step; nothing is left running then.
    """
    if len(stdio) != 3:
        raise ValueError(f"stdio is three fds (stdin, stdout, stderr), not {len(stdio)}")
    _check_status(container)
    recorded = container.state
    assert recorded is not None
    spec = saved.load_saved_spec(container.directory)
    if spec is None:
        raise ExecError(f"container {container.id!r} has no saved spec: cannot exec")
    config = plan_exec(spec, process, Path(recorded.bundle))
    for warning in config.warnings:
        # The same as create's (the same spec), which said them already.
        (log or _log_of(container)).debug("exec: %s", warning)
    cgroup_procs = sorted(
        os.fspath(path / "cgroup.procs") for path in container.cgroup().paths().values()
    )
    if not prctl.get_child_subreaper():
        prctl.set_child_subreaper(True)
    pidfd = _container_pidfd(container)
    try:
        opened = _open_container_namespaces(recorded.pid)
        try:
            if _wait_readable([pidfd], time.monotonic() + 0.0001):
                raise ExecError(f"container {container.id!r} stopped: cannot exec")
            return _spawn(config, opened, stdio, extra_fds, cgroup_procs, timeout)
        finally:
            for _kind, fd in opened:
                os.close(fd)
    finally:
        os.close(pidfd)


def _log_of(container: Container) -> Log:
    return logging.LoggerAdapter(logging.getLogger(__name__), {"container": container.id})


def _spawn(
    config: InitConfig,
    opened: Sequence[tuple[ns.Namespace, int]],
    stdio: Sequence[int],
    extra_fds: Sequence[int],
    cgroup_procs: Sequence[str],
    timeout: float,
) -> ExecHandle:
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    children_before = _children()
    try:
        first = os.fork()
    except OSError as exc:
        parent_sock.close()
        child_sock.close()
        raise ContainerInitError("fork", exc.strerror or str(exc), exc.errno) from None
    if first == 0:
        try:
            parent_sock.close()
            _first_child(config, SyncChannel(child_sock), stdio, extra_fds, opened, cgroup_procs)
        finally:
            os._exit(1)
    child_sock.close()
    creation = _Creation(config, SyncChannel(parent_sock), first, timeout)
    try:
        return _run(creation)
    except ContainerInitError as exc:
        creation.abort(children_before)
        raise ExecStepError(exc.step, exc.message, exc.errno) from None
    except BaseException:
        creation.abort(children_before)
        raise


def _run(creation: _Creation) -> ExecHandle:
    config = creation.config
    channel = creation.channel
    with creation.host_step("fork"):
        creation.first_pidfd = proc.pidfd_open(creation.first_pid)
    message = creation.expect(MSG_PID, creation.first_pidfd, "fork-init")
    creation.init_pid = int(message["pid"])
    status = _reap(creation.first_pid, creation.first_pidfd, creation.deadline)
    creation.first_reaped = status is not None
    if status != 0:
        raise ContainerInitError("fork-init", f"the first child failed (wait status {status})")
    with creation.host_step("fork-init"):
        creation.init_pidfd = proc.pidfd_open(creation.init_pid)
        stat = proc.read_stat(creation.init_pid)
    if stat.ppid != os.getpid():
        raise ContainerInitError(
            "fork-init", f"process {creation.init_pid} was not re-parented to the runtime"
        )
    channel.send(MSG_GO)
    if config.terminal:
        creation.expect(MSG_CONSOLE, creation.init_pidfd, "console")
        creation.console_fd = channel.take_fd()
    if config.rlimits:
        creation.expect(MSG_RLIMITS, creation.init_pidfd, "exec")
        with creation.host_step("rlimits"):
            for number, soft, hard in config.rlimits:
                resource.prlimit(
                    creation.init_pid, number, (_rlimit_value(soft), _rlimit_value(hard))
                )
        channel.send(MSG_ACK)
    # The socket is close-on-exec in the process: EOF means its program runs.
    while True:
        ready = _wait_readable([channel.fileno()], creation.deadline)
        if not ready:
            raise ContainerInitError("exec", "the process neither exec'd nor failed in time")
        word = channel.receive()
        if word is None:
            break
        if word.get("type") == MSG_ERROR:
            raise ContainerInitError(
                str(word.get("step")), str(word.get("message")), word.get("errno")
            )
        raise ContainerInitError("exec", f"unexpected message {word!r}")
    channel.close()
    handle = ExecHandle(
        pid=creation.init_pid,
        start_time=stat.start_time,
        pidfd=creation.init_pidfd,
        channel=channel,
        warnings=config.warnings,
    )
    handle._started = True
    handle._channel = None
    handle.console_fd, creation.console_fd = creation.console_fd, -1
    creation.init_pidfd = -1
    os.close(creation.first_pidfd)
    creation.first_pidfd = -1
    return handle
