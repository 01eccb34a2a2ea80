"""``gantry-runtime exec`` and the terminal handling of ``create``/``run``/``exec``.

The checks follow runc's (``utils_linux.go`` ``checkTerminal``): a detached container
(``create``, ``run -d``, ``exec -d``) with a terminal needs ``--console-socket`` to send
the pty master to; ``--console-socket`` means nothing unless the process is detached and
has a terminal. In the foreground the command receives the master itself and proxies it
to its own terminal, which it must have (stderr, stdout or stdin, else ``/dev/tty``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from gantry.linux import proc
from gantry.runtime import console, saved
from gantry.runtime import exec as rexec
from gantry.runtime import supervisor as sv
from gantry.runtime.spec import Process

__all__ = ["TerminalPlan", "add_exec_arguments", "cmd_exec", "plan_terminal", "proxy_terminal"]


class TerminalUsageError(Exception):
    """The terminal flags do not fit the process; the message says how to fix them."""


@dataclass
class TerminalPlan:
    """How a process's terminal reaches the user: ``send`` is the socket the runtime sends
    the master over (the user's console socket, or our end of a pair); ``receive`` the
    end this command reads it from when it proxies; ``host_tty`` its terminal."""

    send: socket.socket | None = None
    receive: socket.socket | None = None
    host_tty: int = -1
    close_host_tty: bool = False

    def close(self) -> None:
        for sock in (self.send, self.receive):
            if sock is not None:
                sock.close()
        if self.close_host_tty and self.host_tty >= 0:
            os.close(self.host_tty)
            self.host_tty = -1


def plan_terminal(terminal: bool, console_socket: str | None, *, detach: bool) -> TerminalPlan:
    """Check the flags and connect what the process's terminal needs (see the module)."""
    if detach and terminal and not console_socket:
        raise TerminalUsageError(
            "process.terminal is true and the process is detached: give --console-socket "
            "to receive its terminal, or set process.terminal to false (runc: cannot "
            "allocate tty if runc will detach without setting console socket)"
        )
    if console_socket and (not detach or not terminal):
        raise TerminalUsageError(
            "--console-socket is only for a detached process with a terminal "
            "(process.terminal true, and create, run -d or exec -d)"
        )
    if not terminal:
        return TerminalPlan()
    if console_socket:
        return TerminalPlan(send=console.connect_console_socket(console_socket))
    host_tty, opened = console.find_host_terminal()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return TerminalPlan(send=theirs, receive=ours, host_tty=host_tty, close_host_tty=opened)


def proxy_terminal(master: int, plan: TerminalPlan, pid: int, start_time: int) -> None:
    """Copy between this command's stdio and ``master`` until the process ``pid`` (named
    with its ``start_time``) and every other holder of its terminal are gone."""
    pidfd = _pidfd(pid, start_time)
    try:
        proxy = console.TerminalProxy(master, plan.host_tty)
        with proxy.active():
            proxy.run(until_gone=pidfd if pidfd >= 0 else None)
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _pidfd(pid: int, start_time: int) -> int:
    try:
        pidfd = proc.pidfd_open(pid)
    except ProcessLookupError:
        return -1
    with contextlib.suppress(OSError):
        if proc.read_stat(pid).start_time == start_time:
            return pidfd
    os.close(pidfd)
    return -1


@contextlib.contextmanager
def forwarding_signals(send: Callable[[int], None]) -> Iterator[None]:
    """While waiting in the foreground, the signals this command gets go to the process
    (runc does the same), SIGWINCH excepted: it resizes the terminal."""

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            send(signum)

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        previous[int(sig)] = signal.signal(sig, forward)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# --- exec -------------------------------------------------------------------------------------


def add_exec_arguments(sub: argparse.ArgumentParser) -> None:
    """runc's ``exec`` flags."""
    sub.add_argument("--process", "-p", help="a process.json (the OCI process object) to run")
    sub.add_argument("--tty", "-t", action="store_true", help="allocate a pseudo-TTY")
    sub.add_argument("--console-socket", help="AF_UNIX socket to send the pty master to (-d -t)")
    sub.add_argument("--cwd", help="the working directory in the container")
    sub.add_argument(
        "--env", "-e", action="append", default=[], help="set an environment variable (KEY=VALUE)"
    )
    sub.add_argument("--user", "-u", help="uid[:gid] (or a user name) to run as")
    sub.add_argument(
        "--additional-gids",
        "-g",
        action="append",
        type=int,
        default=[],
        help="an additional group id",
    )
    sub.add_argument(
        "--cap", "-c", action="append", default=[], help="add a capability (CAP_NET_ADMIN)"
    )
    sub.add_argument("--no-new-privs", action="store_true", help="set no_new_privs")
    sub.add_argument("--detach", "-d", action="store_true", help="return once it runs")
    sub.add_argument("--pid-file", help="write the process's host pid to this file")
    sub.add_argument(
        "--preserve-fds",
        type=int,
        default=0,
        help="pass this many fds (3, 4, …) on to the process",
    )
    sub.add_argument("id")
    sub.add_argument("command", nargs=argparse.REMAINDER, help="what to run, and its arguments")


class ExecUsageError(Exception):
    """The exec command line is wrong; the message names the flag."""


def _process_for(args: argparse.Namespace, container: sv.Container) -> Process:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if args.process:
        if command:
            raise ExecUsageError("give either --process or a command, not both")
        process = rexec.load_process_file(Path(args.process))
        if args.tty:
            process = rexec.exec_spec(process, terminal=True)
        return process
    if not command:
        raise ExecUsageError("nothing to run: give a command (or --process FILE)")
    spec = saved.load_saved_spec(container.directory)
    if spec is None or spec.process is None:
        raise rexec.ExecError(f"container {container.id!r} has no saved spec: cannot exec")
    return rexec.exec_spec(
        spec.process,
        args=command,
        env=args.env,
        cwd=args.cwd,
        user=args.user,
        additional_gids=args.additional_gids,
        add_caps=args.cap,
        no_new_privs=args.no_new_privs,
        terminal=bool(args.tty),
    )


def cmd_exec(
    args: argparse.Namespace, root: Path, write_pid_file: Callable[[str, int], None]
) -> int:
    """Run a process in a running container; in the foreground, its exit status."""
    if args.preserve_fds < 0:
        raise ExecUsageError("--preserve-fds must not be negative")
    container = sv.find(root, args.id)
    process = _process_for(args, container)
    plan = plan_terminal(process.terminal, args.console_socket, detach=args.detach)
    extra = tuple(range(3, 3 + args.preserve_fds))
    try:
        with contextlib.ExitStack() as stack:
            handle = rexec.exec_process(container, process, extra_fds=extra)
            stack.callback(handle.close)
            if handle.console_fd >= 0 and plan.send is not None and plan.receive is None:
                console.send_console(plan.send, handle.console_fd, container.id)
                os.close(handle.console_fd)
                handle.console_fd = -1
            if args.pid_file:
                write_pid_file(args.pid_file, handle.pid)
            if args.detach:
                handle.release()
                return 0
            with forwarding_signals(handle.kill):
                if handle.console_fd >= 0:
                    proxy_terminal(handle.console_fd, plan, handle.pid, handle.start_time)
                return handle.wait()
    finally:
        plan.close()
    return 0
