"""``gantry-runtime``: the OCI runtime command line (runc's verbs and flags).

``gantry runtime VERB …`` runs the same code. Errors are one line,
``gantry-runtime: VERB: message``, on stderr with exit status 1; a wrong command line
exits 2. The lifecycle itself is :mod:`gantry.runtime.supervisor`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from gantry.cli import runtime_cgroups
from gantry.cli import runtime_exec as rx
from gantry.linux import prctl, proc
from gantry.runtime import console, tini
from gantry.runtime import exec as rexec
from gantry.runtime import state as st
from gantry.runtime import supervisor as sv
from gantry.runtime.cgroups import CgroupError
from gantry.runtime.process import ContainerInitError
from gantry.runtime.shim import ShimMissingError
from gantry.runtime.spec import SpecError, load_spec

PROG = "gantry-runtime"
VERBS = (
    "create",
    "start",
    "state",
    "kill",
    "delete",
    "run",
    "exec",
    "list",
    "ps",
    "pause",
    "resume",
)
"""runc's lifecycle verbs; ``update`` and ``events`` are in :mod:`.runtime_cgroups`."""

Handler = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A verb failed; the message is the one line to print."""


# --- the verbs --------------------------------------------------------------------------------


def _root(args: argparse.Namespace) -> Path:
    return Path(args.root).absolute()


def _find(args: argparse.Namespace) -> sv.Container:
    return sv.find(_root(args), args.id)


def _load(bundle_arg: str | None) -> tuple[Path, Any]:
    bundle = Path(bundle_arg or os.getcwd()).absolute()
    config = bundle / "config.json"
    try:
        spec = load_spec(config, log=logging.getLogger(PROG))
    except FileNotFoundError:
        raise CommandError(f"bundle {bundle}: no config.json") from None
    except OSError as exc:
        raise CommandError(f"cannot read {config}: {exc.strerror or exc}") from None
    except SpecError as exc:
        raise CommandError(f"{config}: {exc}") from None
    return bundle, spec


def _write_pid_file(path: str | None, pid: int) -> None:
    if path:
        st.write_atomic(Path(path).absolute(), f"{pid}", 0o644)


def _create(args: argparse.Namespace, terminal: rx.TerminalPlan | None = None) -> st.ContainerState:
    st.validate_id(args.id)
    bundle, spec = _load(args.bundle)
    detach = args.verb == "create" or args.detach
    try:
        tini.init_binary(spec)
        plan = rx.plan_terminal(spec.process.terminal, args.console_socket, detach=detach)
    except (tini.InitBinaryError, rx.TerminalUsageError, console.ConsoleError) as exc:
        raise CommandError(str(exc)) from None
    try:
        recorded = sv.create(
            _root(args), args.id, bundle=bundle, spec=spec, console_socket=plan.send
        )
    except BaseException:
        plan.close()
        raise
    if plan.send is not None:
        plan.send.close()
        plan.send = None
    if terminal is not None:
        terminal.receive, terminal.host_tty = plan.receive, plan.host_tty
        terminal.close_host_tty = plan.close_host_tty
    else:
        plan.close()
    try:
        _write_pid_file(args.pid_file, recorded.pid)
    except OSError as exc:
        sv.delete(sv.find(_root(args), args.id), force=True)
        raise CommandError(f"--pid-file {args.pid_file}: {exc.strerror or exc}") from None
    return recorded


def cmd_create(args: argparse.Namespace) -> int:
    _create(args)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    with sv.locked(_root(args), args.id) as container:
        sv.start(container)
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    container = _find(args)
    if container.state is None:
        raise CommandError(f"container {args.id!r} is still being created")
    print(json.dumps(st.oci_state(container.state, container.status), indent=2))
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    try:
        sig = st.parse_signal(args.signal)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    with sv.locked(_root(args), args.id) as container:
        sv.kill(container, sig, all_processes=args.all)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    st.validate_id(args.id)
    try:
        with sv.locked(_root(args), args.id) as container:
            sv.delete(container, force=args.force)
    except st.StateError:
        if args.force and not (_root(args) / args.id).exists():
            return 0  # runc: deleting what is not there with --force is not an error
        raise
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if not args.detach:
        # The container's shim is orphaned by create's double fork; in the foreground it
        # lands here rather than on the host's init, and is reaped below once it is done.
        prctl.set_child_subreaper(True)
    terminal = rx.TerminalPlan()
    recorded = _create(args, terminal)
    root = _root(args)
    # Installed before start: a signal that comes while the container starts is its too.
    forwarded = {} if args.detach else _forward_signals(recorded)
    try:
        master = -1
        try:
            if terminal.receive is not None:
                master = console.receive_console(terminal.receive)
            sv.start(sv.find(root, args.id))
        except BaseException:
            if master >= 0:
                os.close(master)
            sv.delete(sv.find(root, args.id), force=True)
            raise
        if args.detach:
            return 0
        if master >= 0:
            try:
                rx.proxy_terminal(master, terminal, recorded.pid, recorded.start_time)
            finally:
                os.close(master)
        record = sv.wait_exit(sv.find(root, args.id))
    finally:
        terminal.close()
        for signum, previous in forwarded.items():
            signal.signal(signum, previous)
    sv.delete(sv.find(root, args.id), force=True)
    _reap(recorded.shim_pid)
    if record is None:
        raise CommandError(f"container {args.id!r}: its exit status was not recorded")
    return record.exit_code


def _reap(pid: int, timeout: float = 5.0) -> None:
    """Reap ``pid`` if it is (now) our child; give up quietly after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reaped, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return  # not ours: the host's init reaps it
        if reaped or time.monotonic() >= deadline:
            return
        time.sleep(0.005)


def _forward_signals(recorded: st.ContainerState) -> dict[int, Any]:
    """While ``run`` waits, the signals it gets go to the container's init (runc does)."""

    def forward(signum: int, _frame: FrameType | None) -> None:
        pidfd = None
        try:
            pidfd = proc.pidfd_open(recorded.pid)
            if proc.read_stat(recorded.pid).start_time == recorded.start_time:
                proc.pidfd_send_signal(pidfd, signum)
        except OSError:
            pass
        finally:
            if pidfd is not None:
                os.close(pidfd)

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        previous[int(signum)] = signal.signal(signum, forward)
    return previous


def cmd_exec(args: argparse.Namespace) -> int:
    return rx.cmd_exec(args, _root(args), _write_pid_file)


def cmd_list(args: argparse.Namespace) -> int:
    containers = [c for c in sv.list_containers(_root(args)) if c.state is not None]
    if args.quiet:
        for container in containers:
            print(container.id)
        return 0
    if args.format == "json":
        print(json.dumps([_list_entry(c) for c in containers], indent=2))
        return 0
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    for c in containers:
        assert c.state is not None
        pid = 0 if c.status == "stopped" else c.state.pid
        rows.append((c.id, str(pid), c.status, c.state.bundle, c.state.created, "root"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("   ".join(cells).rstrip())
    return 0


def _list_entry(container: sv.Container) -> dict[str, Any]:
    assert container.state is not None
    entry = st.oci_state(container.state, container.status)
    entry["owner"] = "root"
    return entry


def cmd_ps(args: argparse.Namespace) -> int:
    container = _find(args)
    if container.state is None or container.status == "stopped":
        pids: list[int] = []
    else:
        pids = container.cgroup().all_pids()
    if args.format == "json":
        print(json.dumps(pids))
        return 0
    print("PID   CMD")
    for pid in pids:
        print(f"{pid:<5} {_command_line(pid)}")
    return 0


def _command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def cmd_pause(args: argparse.Namespace) -> int:
    with sv.locked(_root(args), args.id) as container:
        sv.pause(container)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    with sv.locked(_root(args), args.id) as container:
        sv.resume(container)
    return 0


# --- the parser -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # usage errors: one line, exit 2
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The global flags and the verbs, on ``parser`` (``gantry-runtime`` or
    ``gantry runtime``)."""
    parser.add_argument(
        "--root",
        default=str(st.DEFAULT_ROOT),
        help=f"where container state is kept (default {st.DEFAULT_ROOT})",
    )
    parser.add_argument("--log", help="accepted for compatibility with runc; ignored")
    parser.add_argument("--log-format", help="accepted for compatibility with runc; ignored")
    parser.add_argument("--debug", action="store_true", help="log debug messages to stderr")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    def verb(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(runtime_handler=handler)
        return sub

    def create_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--bundle", "-b", help="the bundle directory (default: the current one)")
        sub.add_argument("--pid-file", help="write the init's pid to this file")
        sub.add_argument(
            "--console-socket",
            help="AF_UNIX socket to send the pty master to (process.terminal, detached)",
        )
        sub.add_argument("id")

    create_flags(verb("create", cmd_create, "create a container, waiting to be started"))
    verb("start", cmd_start, "start a created container").add_argument("id")
    verb("state", cmd_state, "print a container's OCI state as JSON").add_argument("id")
    kill = verb("kill", cmd_kill, "send a signal (default TERM) to a container")
    kill.add_argument("--all", "-a", action="store_true", help="every process in its cgroup")
    kill.add_argument("id")
    kill.add_argument("signal", nargs="?", default="TERM")
    delete = verb("delete", cmd_delete, "delete a stopped container")
    delete.add_argument("--force", "-f", action="store_true", help="kill it first if it runs")
    delete.add_argument("id")
    run = verb("run", cmd_run, "create and start a container, wait for it, delete it")
    run.add_argument("--detach", "-d", action="store_true", help="return once it runs")
    create_flags(run)
    rx.add_exec_arguments(verb("exec", cmd_exec, "run a process in a running container"))
    listing = verb("list", cmd_list, "list the containers")
    listing.add_argument("--format", "-f", choices=("table", "json"), default="table")
    listing.add_argument("--quiet", "-q", action="store_true", help="ids only")
    ps = verb("ps", cmd_ps, "list the processes of a container")
    ps.add_argument("--format", "-f", choices=("table", "json"), default="table")
    ps.add_argument("id")
    verb("pause", cmd_pause, "freeze every process of a container").add_argument("id")
    verb("resume", cmd_resume, "thaw a paused container").add_argument("id")
    runtime_cgroups.add_verbs(verb)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Gantry's OCI runtime (runc's command line).")
    add_arguments(parser)
    return parser


def dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the parsed verb; every failure becomes one line on stderr and status 1."""
    handler: Handler | None = getattr(args, "runtime_handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format=f"{PROG}: %(message)s",
        stream=sys.stderr,
    )
    try:
        return handler(args)
    except ContainerInitError as exc:
        message = str(exc)
    except (CommandError, st.StateError, sv.RuntimeError_, CgroupError) as exc:
        message = str(exc)
    except runtime_cgroups.ERRORS as exc:
        message = str(exc)
    except ShimMissingError as exc:
        message = str(exc)
    except (
        rexec.ExecError,
        rx.ExecUsageError,
        rx.TerminalUsageError,
        console.ConsoleError,
    ) as exc:
        message = str(exc)
    except SpecError as exc:
        message = str(exc)
    except OSError as exc:
        message = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug still ends in one line, never a traceback
        message = f"internal error: {type(exc).__name__}: {exc}"
    print(f"{PROG}: {args.verb}: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return dispatch(args, parser)


if __name__ == "__main__":
    sys.exit(main())
