"""The container init: what runs as PID 1 of the container, from its fork to execve.

:func:`container_init` is the whole sequence, one named step per line, in the order the
kernel needs (crun's ``container_init_setup``, runc's stage 2). It runs in the grandchild
that :func:`gantry.runtime.process.create_init` forks, already inside every namespace of
the container and already in its cgroups, with its oom_score_adj written by the runtime.

Everything the steps need is computed before the first fork, in the runtime, as an
:class:`InitConfig`: nothing here re-reads or re-checks the spec. After pivot_root the
host's Python library is out of sight, so every module used here is imported at the top.

The init talks to the runtime over one ``SOCK_SEQPACKET`` socket (:class:`SyncChannel`),
one JSON object per datagram. A failing step is reported as
``{"type": "error", "step", "errno", "message"}`` and the init exits: the runtime never
sees a traceback from here, and a runtime that goes away (EOF) ends the init.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn

from gantry.linux import fs, ns, prctl, proc
from gantry.linux import mount as mnt
from gantry.linux import seccomp as kernel_seccomp
from gantry.runtime import console, devices, hooks, security, users
from gantry.runtime.rootfs import RootfsError, prepare_rootfs
from gantry.runtime.security import CapabilityPlan
from gantry.runtime.spec import Spec
from gantry.runtime.users import ExecUser

__all__ = [
    "DEFAULT_PATH",
    "MSG_ACK",
    "MSG_CONSOLE",
    "MSG_CREATED",
    "MSG_ERROR",
    "MSG_GO",
    "MSG_HOOKS",
    "MSG_PID",
    "MSG_RLIMITS",
    "MSG_STAGE1",
    "MSG_START",
    "MSG_TIMENS",
    "InitConfig",
    "InitStepError",
    "SyncChannel",
    "container_init",
    "report_and_exit",
    "step",
]

# Messages of the sync protocol, child -> runtime ...
MSG_STAGE1: Final = "stage1"  # first child alive (and in its user namespace): join cgroups, map ids
MSG_TIMENS: Final = "timens"  # time namespace created: write its offsets
MSG_PID: Final = "pid"  # the init is forked: {"pid": host pid}
MSG_RLIMITS: Final = "rlimits"  # ids still the runtime's: set the rlimits with prlimit(2)
MSG_HOOKS: Final = "hooks"  # mounts made, before pivot_root: run prestart and createRuntime
MSG_CONSOLE: Final = "console"  # the pty master, as SCM_RIGHTS
MSG_CREATED: Final = "created"  # set up, waiting for start right before execve
MSG_ERROR: Final = "error"  # {"step", "errno", "message"}
# ... and runtime -> child.
MSG_ACK: Final = "ack"
MSG_GO: Final = "go"  # the runtime holds a pidfd of the init and is its parent; {"state"}
MSG_START: Final = "start"  # exec the container process

DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""Where the executable is looked up when the spec's environment has no PATH."""

MAX_MESSAGE: Final = 65536
_MAX_TEXT: Final = 4000

_EXIT_SETUP_FAILED: Final = 1
_EXIT_NOT_EXECUTABLE: Final = 126
_EXIT_NOT_FOUND: Final = 127
_MAX_FDS: Final = 4

# Network interface ioctls (linux/sockios.h) and the "up" flag (linux/if.h).
_SIOCGIFFLAGS: Final = 0x8913
_SIOCSIFFLAGS: Final = 0x8914
_IFF_UP: Final = 0x1
_IFREQ: Final = struct.Struct("16sH22x")  # struct ifreq: name, then ifr_flags in the union


# --- what the init is told --------------------------------------------------------------------


@dataclass(frozen=True)
class InitConfig:
    """Everything the container's first child and init do, decided before the first fork."""

    spec: Spec
    """For :func:`prepare_rootfs`; the other steps read the fields below."""
    bundle: Path
    rootfs: str
    """``root.path``, relative to ``bundle`` unless absolute."""
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    cwd: str
    # namespaces
    new_user_ns: bool = False
    join: tuple[tuple[ns.Namespace, str], ...] = ()
    """Namespaces to join by path, the user namespace first."""
    unshare_flags: int = 0
    """``CLONE_NEW*`` of the namespaces to create, except user and pid."""
    new_pid_ns: bool = False
    new_net_ns: bool = False
    uid_map: str = ""
    gid_map: str = ""
    deny_setgroups: bool = False
    """Write ``deny`` to the new user namespace's setgroups (an unprivileged runtime)."""
    time_offsets: str = ""
    """The text for ``/proc/<pid>/timens_offsets``, empty when there are none."""
    # written by the runtime from outside
    oom_score_adj: int | None = None
    rlimits: tuple[tuple[int, int, int], ...] = ()
    """``(RLIMIT_* number, soft, hard)``."""
    # inside
    hostname: str | None = None
    domainname: str | None = None
    sysctls: tuple[tuple[str, str], ...] = ()
    no_new_privs: bool = False
    username: str | None = None
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    umask: int | None = None
    capabilities: CapabilityPlan = field(default_factory=CapabilityPlan)
    last_cap: int = 0
    """The kernel's highest capability number, read on the host."""
    seccomp: tuple[kernel_seccomp.SockFilter, ...] = ()
    """The compiled filter, empty for none."""
    seccomp_flags: int = 0
    seccomp_early: bool = False
    """Load the filter before dropping capabilities (see security.seccomp_goes_early)."""
    warnings: tuple[str, ...] = ()
    start_fifo: bool = False
    """Wait for start on the ``exec.fifo`` whose O_PATH fd sits right after the socket
    (runc's create/start split), instead of a ``start`` message on the socket."""
    terminal: bool = False
    """Allocate a pty (``process.terminal``) and send its master to the runtime."""
    console_size: tuple[int, int] | None = None
    """``process.consoleSize`` as ``(rows, columns)``."""
    create_hooks: bool = False
    """The spec has prestart, createRuntime or createContainer hooks: stop before
    pivot_root for them (:data:`MSG_HOOKS`)."""


# --- the sync channel -------------------------------------------------------------------------


class SyncChannel:
    """One end of the runtime <-> init socket pair: one JSON object per datagram."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.passed_fds: list[int] = []
        """Fds that came with messages (SCM_RIGHTS), close-on-exec, for the receiver to
        take; :meth:`close` closes those left."""

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, kind: str, *, fds: tuple[int, ...] = (), **fields: object) -> None:
        """Send one message (with ``fds`` as SCM_RIGHTS); MSG_NOSIGNAL, so a vanished peer
        is EPIPE and not SIGPIPE."""
        data = json.dumps({"type": kind, **fields}).encode()
        if fds:
            socket.send_fds(self.sock, [data], list(fds), socket.MSG_NOSIGNAL)
        else:
            self.sock.send(data, socket.MSG_NOSIGNAL)

    def receive(self) -> dict[str, Any] | None:
        """Block for the next message; ``None`` when the other side has closed."""
        data, fds, _flags, _addr = socket.recv_fds(
            self.sock, MAX_MESSAGE, _MAX_FDS, socket.MSG_CMSG_CLOEXEC
        )
        self.passed_fds.extend(fds)
        if not data:
            return None
        message = json.loads(data)
        if not isinstance(message, dict):
            raise ValueError(f"sync: expected a JSON object, got {type(message).__name__}")
        return message

    def expect(self, kind: str) -> dict[str, Any]:
        """Block for message ``kind``; anything else (or EOF) is an error of step sync."""
        message = self.receive()
        if message is None:
            raise InitStepError("sync", f"the runtime went away while the init waited for {kind}")
        if message.get("type") != kind:
            raise InitStepError("sync", f"expected {kind!r} from the runtime, got {message!r}")
        return message

    def move_to(self, fd: int) -> None:
        """Renumber the socket to ``fd`` (close-on-exec): the execve closes it, and the
        runtime's reading EOF is how it learns the exec happened."""
        if self.sock.fileno() != fd:
            os.dup2(self.sock.fileno(), fd, inheritable=False)
            self.sock.close()
            self.sock = socket.socket(fileno=fd)

    def take_fd(self) -> int:
        """The oldest fd passed with a message; ``InitStepError`` when none came."""
        if not self.passed_fds:
            raise InitStepError("sync", "expected an fd with the message, none came")
        return self.passed_fds.pop(0)

    def close(self) -> None:
        for fd in self.passed_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.passed_fds.clear()
        self.sock.close()


# --- failures ---------------------------------------------------------------------------------


class InitStepError(Exception):
    """A step of the container's creation failed; ``step`` names it."""

    def __init__(self, step_name: str, message: str, err: int | None = None) -> None:
        super().__init__(step_name, message, err)
        self.step = step_name
        self.message = message
        self.errno = err

    def __str__(self) -> str:
        return f"{self.step}: {self.message}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RootfsError):
        return str(exc)
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        names = [
            os.fsdecode(n) for n in (exc.filename, exc.filename2) if isinstance(n, str | bytes)
        ]
        return f"{text}: {' -> '.join(names)}" if names else text
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Run a step: any exception in the block becomes an :class:`InitStepError` naming it."""
    try:
        yield
    except InitStepError:
        raise
    except Exception as exc:  # every failure of a step is reported, whatever its type
        err = exc.errno if isinstance(exc, OSError | RootfsError) else None
        raise InitStepError(name, _describe(exc), err) from None


def report_and_exit(channel: SyncChannel, failure: InitStepError) -> NoReturn:
    """Tell the runtime which step failed and why, then exit (never returns)."""
    code = _EXIT_SETUP_FAILED
    if failure.step == "exec":
        code = _EXIT_NOT_FOUND if failure.errno == errno.ENOENT else _EXIT_NOT_EXECUTABLE
    # The runtime may be gone already (then there is nobody to tell) or a seccomp filter
    # may refuse the send: either way, the exit status remains.
    with contextlib.suppress(Exception):
        channel.send(
            MSG_ERROR,
            step=failure.step,
            errno=failure.errno,
            message=failure.message[:_MAX_TEXT],
        )
    os._exit(code)


# --- the init sequence ------------------------------------------------------------------------


def container_init(config: InitConfig, channel: SyncChannel) -> NoReturn:
    """Set up the container around this process and execve its program. Never returns.

    Called in the container's PID 1 (the grandchild), non-dumpable since its first
    ancestor's fork, inside every namespace, in the cgroups, with fds 0..2 (+ extra fds)
    as the container will see them and the sync socket right after them.
    """
    try:
        with step("sync"):
            # The runtime is our parent now, and holds our pidfd.
            state: dict[str, Any] = channel.expect(MSG_GO).get("state") or {}
        with step("session"):
            os.setsid()  # a session of our own: the console pty becomes its terminal
        if config.new_net_ns:
            with step("network"):
                bring_up_loopback()
        with step("sysctl"):
            proc_sys = open_proc_sys() if config.sysctls else -1
        with step("rootfs"):
            prepare_rootfs(
                config.spec,
                config.rootfs,
                bundle=config.bundle,
                log=_SILENT,
                before_pivot=(
                    (lambda: run_create_hooks(config, channel, state))
                    if config.create_hooks
                    else None
                ),
            )
        if config.terminal:
            with step("console"):
                # After pivot_root and the mounts, from the container's own devpts, as
                # runc's setupConsole.
                setup_console(channel, config.console_size, bind_console=True)
        with step("hostname"):
            set_host_names(config.hostname, config.domainname)
        with step("sysctl"):
            write_sysctls(proc_sys, config.sysctls)
        # oom_score_adj: written by the runtime on our first ancestor (a value below the
        # current one needs CAP_SYS_RESOURCE outside any user namespace).
        # AppArmor and SELinux: not supported; the runtime warned about a profile or label.
        executable, environ = become_process(config, channel)
        with step("fds"):
            close_inherited_fds(channel, keep_fifo=config.start_fifo)
        with step("sync"):
            channel.send(MSG_CREATED)  # create_init returns: the OCI "created" state
            if not config.start_fifo:
                channel.expect(MSG_START)
        start_hooks = hooks.hooks_of(config.spec.hooks, "startContainer")
        if config.start_fifo:
            with step("start-fifo"):
                gate = open_start_gate(channel.fileno() + 1)
            pass_start_gate(gate, start_hooks, state)
        elif start_hooks:
            run_start_hooks(start_hooks, state)
        if config.seccomp and not config.seccomp_early:
            with step("seccomp"):
                load_seccomp(config)  # last: the filter governs nothing of our own set-up
        with step("exec"):
            os.execve(executable, config.args, environ)
        raise InitStepError("exec", "execve returned")
    except InitStepError as failure:
        report_and_exit(channel, failure)
    except BaseException as exc:  # a bug here must still end in a report, not a traceback
        report_and_exit(channel, InitStepError("internal", f"{type(exc).__name__}: {exc}"))


def become_process(config: InitConfig, channel: SyncChannel) -> tuple[str, Mapping[str, str]]:
    """The process's own set-up, in runc's order, shared by the container's init and by
    every exec'd process: no_new_privs, the user (from the container's passwd) and umask,
    the terminal's owner, rlimits (set from outside), an early seccomp filter, the bounding
    set, cwd, the user switch, capabilities, cwd verified; the executable and environment.
    """
    if config.no_new_privs:
        with step("no-new-privileges"):
            prctl.set_no_new_privs()
    with step("user"):
        user = resolve_user(config)
        apply_umask(config.umask)
    if config.terminal:
        with step("console"):
            give_terminal_to(user)
    if config.rlimits:
        with step("rlimits"):
            # Set from outside: a hard limit cannot be raised from inside a user
            # namespace, and prlimit(2) on a process whose ids differ from the caller's
            # needs CAP_SYS_RESOURCE: so now, before the user switch (runc's procReady).
            # Our own set-up is done with what it opens (the passwd files).
            channel.send(MSG_RLIMITS)
            channel.expect(MSG_ACK)
    if config.seccomp and config.seccomp_early:
        with step("seccomp"):
            # Without no_new_privs only CAP_SYS_ADMIN may load a filter, and the
            # container keeps none: the last chance is now (runc does the same).
            load_seccomp(config)
    with step("capabilities"):
        # Before the user switch: PR_CAPBSET_DROP needs CAP_SETPCAP still effective.
        security.drop_bounding_set(config.capabilities, last_cap=config.last_cap)
    with step("cwd"):
        cwd_entered = try_enter_cwd(config.cwd)
    with step("user"):
        security.switch_user(user, set_groups=not config.deny_setgroups)
    with step("capabilities"):
        security.apply_capabilities(config.capabilities)
    with step("cwd"):
        if not cwd_entered:
            os.chdir(config.cwd)
        verify_cwd()
    with step("exec"):
        executable = find_executable(config.args[0], config.env)
        environ = build_environment(config.env, user)
    return executable, environ


# --- the steps --------------------------------------------------------------------------------

# prepare_rootfs logs at debug level; in here a log record could only reach a handler
# whose file the first child has closed. A disabled logger outside the hierarchy drops them.
_SILENT: Final = logging.Logger("gantry.runtime.init.child")
_SILENT.disabled = True


def bring_up_loopback() -> None:
    """Set ``lo`` up in the container's new network namespace, as runc does: 127.0.0.1
    then works without any network plugin."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = _IFREQ.pack(b"lo", 0)
        flags = _IFREQ.unpack(fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))[1]
        if not flags & _IFF_UP:
            fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))


def open_proc_sys() -> int:
    """An O_PATH fd of ``/proc/sys`` on a procfs instance of our own, mounted nowhere.

    The sysctls are written after the rootfs is ready, when the container's /proc/sys is
    already read-only (a default read-only path); a procfs of our own is writable, is
    untouched by anything mounted over the container's /proc (runc's fix of
    CVE-2025-52881 writes through such a handle too), and, created now, before the masked
    paths exist, is not refused as "too revealing" inside a user namespace. The files in
    /proc/sys follow the writer's namespaces, so they are the container's.
    """
    try:
        fs_fd = mnt.fsopen("proc")
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
        # Before Linux 5.2: the /proc of this mount namespace, still the host's instance.
        return os.open("/proc/sys", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        mnt.fsconfig(fs_fd, mnt.FSCONFIG_CMD_CREATE)
        mount_fd = mnt.fsmount(
            fs_fd, mnt.MOUNT_ATTR_NOSUID | mnt.MOUNT_ATTR_NODEV | mnt.MOUNT_ATTR_NOEXEC
        )
    finally:
        os.close(fs_fd)
    try:
        # This fd keeps the detached mount alive until it is closed.
        return os.open("sys", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=mount_fd)
    finally:
        os.close(mount_fd)


def sysctl_path(key: str) -> str:
    """The path below /proc/sys of sysctl ``key``: dots are separators, unless the key
    already uses slashes (how an interface name with a dot, ``eth0.100``, is written)."""
    path = key if "/" in key else key.replace(".", "/")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{key!r} is not a sysctl name")
    return path


def write_sysctls(proc_sys: int, sysctls: tuple[tuple[str, str], ...]) -> None:
    """Write each ``linux.sysctl`` value below the ``proc_sys`` handle, then close it."""
    if proc_sys < 0:
        return
    try:
        for key, value in sysctls:
            try:
                fd = _open_beneath(proc_sys, sysctl_path(key))
                try:
                    os.write(fd, value.encode())
                finally:
                    os.close(fd)
            except OSError as exc:
                raise OSError(exc.errno, f"{key}: {exc.strerror}") from None
    finally:
        os.close(proc_sys)


def _open_beneath(dir_fd: int, path: str) -> int:
    resolve = fs.RESOLVE_BENEATH | fs.RESOLVE_NO_SYMLINKS | fs.RESOLVE_NO_XDEV
    try:
        return fs.openat2(dir_fd, path, os.O_WRONLY | os.O_NOCTTY, resolve=resolve)
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
    # /proc/sys has no symlinks; refusing them keeps the fallback as strict.
    return os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def set_host_names(hostname: str | None, domainname: str | None) -> None:
    """Set the hostname and NIS domain name of the container's UTS namespace."""
    if hostname is not None:
        ns.sethostname(hostname)
    if domainname is not None:
        ns.setdomainname(domainname)


def resolve_user(config: InitConfig) -> ExecUser:
    """Who the process runs as, from the spec and the container's own /etc/passwd and
    /etc/group (parsed by hand: never NSS inside a rootfs, CVE-2019-14271)."""
    needs_passwd = config.username is not None or not any(k == "HOME" for k, _v in config.env)
    needs_group = config.username is not None
    passwd_text = group_text = None
    if needs_passwd or needs_group:
        root_fd = fs.open_root("/")
        try:
            passwd_text = users.read_database(root_fd, "/etc/passwd") if needs_passwd else None
            group_text = users.read_database(root_fd, "/etc/group") if needs_group else None
        finally:
            os.close(root_fd)
    spec_user = config.username if config.username is not None else f"{config.uid}:{config.gid}"
    return users.resolve_user(
        spec_user,
        passwd=users.parse_passwd(passwd_text or ""),
        groups=users.parse_group(group_text or ""),
        additional_gids=config.additional_gids,
    )


def apply_umask(umask: int | None) -> None:
    """Set ``process.user.umask`` (prepare_rootfs left the default 0022)."""
    if umask is not None:
        os.umask(umask)


def load_seccomp(config: InitConfig) -> None:
    """Attach the compiled filter; from here on, the profile decides every syscall."""
    kernel_seccomp.load_filter(config.seccomp, config.seccomp_flags)


def try_enter_cwd(cwd: str) -> bool:
    """chdir to ``cwd`` while still root: a directory only root may enter still works as
    the cwd of another user (runc#2891). False when permission was refused: tried again
    as the container's user."""
    try:
        os.chdir(cwd)
    except PermissionError:
        return False
    return True


def verify_cwd() -> None:
    """Fail unless the working directory is inside the container root.

    A cwd left on a host directory (a leaked fd, ``cwd=/proc/self/fd/N``) is what
    CVE-2024-21626 used to reach the host; getcwd(2) then says "(unreachable)", and glibc
    turns that into ENOENT.
    """
    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        raise PermissionError(
            errno.EPERM, "the working directory is outside the container root"
        ) from None
    if not cwd.startswith("/") or "(unreachable)" in cwd:
        raise PermissionError(errno.EPERM, f"the working directory {cwd!r} is outside the root")


def _env_value(env: tuple[tuple[str, str], ...], name: str) -> str | None:
    found = None
    for key, value in env:
        if key == name:
            found = value  # the last one wins, as for execve's own environment
    return found


def find_executable(arg0: str, env: tuple[tuple[str, str], ...]) -> str:
    """The file to execve for ``args[0]``: as given when it has a slash, else the first
    executable regular file of that name in the container's PATH (looked up inside the
    container root, as the container's user)."""
    if "/" in arg0:
        _check_executable(arg0)
        return arg0
    search = _env_value(env, "PATH")
    for directory in (DEFAULT_PATH if search is None else search).split(":"):
        candidate = os.path.join(directory or ".", arg0)
        with contextlib.suppress(OSError):
            _check_executable(candidate)
            return candidate
    raise FileNotFoundError(errno.ENOENT, f"{arg0!r}: executable file not found in $PATH")


def _check_executable(path: str) -> None:
    info = os.stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EACCES, f"{path!r} is a directory")
    if not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, f"{path!r} is not executable")


def build_environment(env: tuple[tuple[str, str], ...], user: ExecUser) -> Mapping[str, str]:
    """The spec's environment, plus HOME from the user's passwd entry when it has none."""
    environ = dict(env)
    environ.setdefault("HOME", user.home)
    return environ


def close_inherited_fds(channel: SyncChannel, *, keep_fifo: bool = False) -> None:
    """Close every fd above the sync socket: only stdio, the extra fds (3..), the socket
    and, with ``keep_fifo``, the exec.fifo handle after it (both close-on-exec) are left
    (CVE-2024-21626 came in through a leaked fd)."""
    proc.close_range(channel.fileno() + (2 if keep_fifo else 1))


START_OK: Final = b"0"
"""What the init writes to the exec.fifo when it goes on to exec; anything else is
``START_FAILED`` and the reason, for ``start`` to report."""
START_FAILED: Final = b"!"


def open_start_gate(fifo_fd: int) -> int:
    """Block until ``start`` opens the exec.fifo for reading; the FIFO opened for writing.

    ``fifo_fd`` is an O_PATH handle opened by the runtime on the host: after pivot_root
    the FIFO's path is out of sight, so it is reopened for writing through this process's
    own ``/proc/self/fd`` (runc does the same). Opening a FIFO for writing blocks until
    a reader comes: that open is the gate.
    """
    try:
        writer = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, "reopening exec.fifo needs /proc mounted in the container"
        ) from None
    finally:
        os.close(fifo_fd)
    return writer


def pass_start_gate(gate: int, start_hooks: tuple[Any, ...], state: dict[str, Any]) -> None:
    """Run the startContainer hooks, then tell ``start`` through the FIFO ``gate`` whether
    the program is about to be executed: a hook's failure is then ``start``'s error."""
    try:
        run_start_hooks(start_hooks, state)
    except InitStepError as failure:
        with contextlib.suppress(OSError):
            os.write(gate, START_FAILED + str(failure).encode()[:_MAX_TEXT])
        os.close(gate)
        raise
    with step("start-fifo"):
        os.write(gate, START_OK)
    # Left open (close-on-exec): the execve closes it, and the end-of-file that ``start``
    # then reads says the program runs, so poststart hooks run after it (runtime-spec).


def run_start_hooks(start_hooks: tuple[Any, ...], state: dict[str, Any]) -> None:
    """The startContainer hooks: in the container, after pivot_root (their paths are the
    container's), as its user, before the program's execve (runtime-spec config.md)."""
    if not start_hooks:
        return
    with step("hooks"):
        try:
            hooks.run_hooks(start_hooks, "startContainer", {**state, "status": "created"})
        except hooks.HookError as exc:
            raise InitStepError("hooks", str(exc)) from None


def run_create_hooks(config: InitConfig, channel: SyncChannel, state: dict[str, Any]) -> None:
    """Between the mounts and pivot_root: the runtime runs prestart and createRuntime in
    its own namespaces (:data:`MSG_HOOKS`), then this init runs createContainer in the
    container's, with the host's paths still in sight (runc's order)."""
    with step("hooks"):
        channel.send(MSG_HOOKS)
        channel.expect(MSG_ACK)
        try:
            hooks.run_hooks(
                hooks.hooks_of(config.spec.hooks, "createContainer"),
                "createContainer",
                {**state, "status": "creating"},
            )
        except hooks.HookError as exc:
            raise InitStepError("hooks", str(exc)) from None


def give_terminal_to(user: ExecUser) -> None:
    """Make the pty (fd 0) the process user's own, as runc's fixStdioPermissions does: the
    slave is created root's, mode 0620, and a non-root user could not reopen its own
    terminal (``/proc/self/fd/0``, ``tty``-checking programs) otherwise."""
    os.fchown(0, user.uid, -1)


def setup_console(
    channel: SyncChannel, size: tuple[int, int] | None, *, bind_console: bool
) -> None:
    """Allocate the process's pty from ``/dev/ptmx`` (the container's devpts), bind the
    slave over ``/dev/console`` (the init only), send the master to the runtime, and make
    the slave fds 0-2 and the controlling terminal (the session is ours already)."""
    try:
        master, slave = console.open_pty("/dev/ptmx")
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, "process.terminal needs /dev/ptmx and a devpts mount at /dev/pts"
        ) from None
    try:
        if size is not None:
            console.set_window_size(slave, console.WindowSize(*size))
        if bind_console:
            root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                devices.bind_console(root_fd, f"/proc/self/fd/{slave}")
            finally:
                os.close(root_fd)
        channel.send(MSG_CONSOLE, fds=(master,))
        console.make_controlling_terminal(slave)
    finally:
        os.close(master)
        os.close(slave)
