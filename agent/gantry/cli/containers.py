"""The ``gantry`` client verbs for containers, with Docker's names, flags and meanings:
``ps``, ``run``, ``create``, ``start``, ``stop``, ``restart``, ``kill``, ``rm``, ``wait``,
``exec``, ``logs``, ``inspect``, ``pause``, ``unpause``. They talk to the agent over HTTP
(``--url``, default the local socket, or ``GANTRY_URL``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from gantry.cli import networks
from gantry.cli.client import DEFAULT_URL, AgentClient, AgentError, ClientSettings

__all__ = ["VERBS", "register"]

Handler = Callable[[argparse.Namespace, AgentClient], int]


def _client_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("agent connection")
    group.add_argument("--url", help=f"the agent (default $GANTRY_URL or {DEFAULT_URL})")
    group.add_argument("--token", help="bearer token (default $GANTRY_TOKEN)")
    group.add_argument("--tls-cert", dest="tls_cert", help="client certificate ($GANTRY_TLS_CERT)")
    group.add_argument("--tls-key", dest="tls_key", help="client key ($GANTRY_TLS_KEY)")
    group.add_argument(
        "--tls-ca", dest="tls_ca", help="CA of the agent's certificate ($GANTRY_TLS_CA)"
    )
    return parent


def _spec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="container name (default: a generated one)")
    parser.add_argument("--rootfs", help="directory to use as the root filesystem")
    parser.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    parser.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]")
    parser.add_argument("--tmpfs", action="append", default=[], metavar="DST")
    parser.add_argument("-p", "--publish", action="append", default=[], metavar="PORTS")
    parser.add_argument("-l", "--label", action="append", default=[], metavar="K=V")
    parser.add_argument("-m", "--memory", help="memory limit (bytes or 512m, 1g)")
    parser.add_argument("--memory-swap", dest="memory_swap")
    parser.add_argument("--cpus", type=float)
    parser.add_argument("--cpu-shares", dest="cpu_shares", type=int)
    parser.add_argument("--cpuset-cpus", dest="cpuset_cpus")
    parser.add_argument("--pids-limit", dest="pids_limit", type=int)
    networks.add_spec_flags(parser)
    parser.add_argument("--restart", help="no, on-failure[:N], always, unless-stopped")
    parser.add_argument("-u", "--user")
    parser.add_argument("-w", "--workdir")
    parser.add_argument("-h", "--hostname")
    parser.add_argument("--entrypoint")
    parser.add_argument("--read-only", dest="read_only", action="store_true")
    parser.add_argument("--privileged", action="store_true")
    parser.add_argument("--cap-add", dest="cap_add", action="append", default=[])
    parser.add_argument("--cap-drop", dest="cap_drop", action="append", default=[])
    parser.add_argument("--stop-signal", dest="stop_signal")
    parser.add_argument("--stop-timeout", dest="stop_timeout", type=float)
    parser.add_argument("--sysctl", action="append", default=[], metavar="K=V")
    parser.add_argument("--init", action="store_true")
    parser.add_argument("-t", "--tty", action="store_true")
    parser.add_argument(
        "--pull",
        choices=("missing", "always", "never"),
        default="missing",
        help="pull the image before creating: missing (default), always, never",
    )
    parser.add_argument("image_and_command", nargs=argparse.REMAINDER, metavar="[IMAGE] COMMAND")


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not key or not sep:
            raise AgentError(0, f"{flag}: want KEY=VALUE, got {item!r}", flag)
        out[key] = value
    return out


def _build_spec(args: argparse.Namespace) -> dict[str, Any]:
    words = list(args.image_and_command)
    spec: dict[str, Any] = {}
    if args.rootfs:
        spec["rootfs"] = os.path.abspath(args.rootfs)
    elif words:
        spec["image"] = words.pop(0)
    spec["command"] = words
    if args.entrypoint is not None:
        spec["entrypoint"] = [args.entrypoint] if args.entrypoint else []
    if args.env:
        spec["env"] = _pairs(args.env, "--env")
    if args.label:
        spec["labels"] = _pairs(args.label, "--label")
    if args.sysctl:
        spec["sysctls"] = _pairs(args.sysctl, "--sysctl")
    mounts: list[dict[str, Any]] = []
    for volume in args.volume:
        parts = volume.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise AgentError(0, f"--volume: want SRC:DST[:ro], got {volume!r}", "--volume")
        mounts.append(
            {
                "type": "bind",
                "source": os.path.abspath(parts[0]),
                "target": parts[1],
                "read_only": len(parts) == 3 and parts[2] == "ro",
            }
        )
    mounts += [{"type": "tmpfs", "target": target} for target in args.tmpfs]
    if mounts:
        spec["mounts"] = mounts
    if args.publish:
        spec["ports"] = args.publish
    resources = {
        key: getattr(args, key)
        for key in ("memory", "memory_swap", "cpus", "cpu_shares", "cpuset_cpus", "pids_limit")
        if getattr(args, key) is not None
    }
    if resources:
        spec["resources"] = resources
    networks.apply_spec_flags(args, spec)
    if args.cap_add or args.cap_drop:
        spec["capabilities"] = {"add": args.cap_add, "drop": args.cap_drop}
    for key in ("user", "workdir", "hostname", "stop_signal", "stop_timeout"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    if args.restart:
        spec["restart_policy"] = args.restart
    for key in ("read_only", "privileged", "init", "tty"):
        if getattr(args, key):
            spec[key] = True
    return spec


def _generated_name() -> str:
    return "c-" + os.urandom(6).hex()


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


# --- verbs ----------------------------------------------------------------------------------


def _ps(args: argparse.Namespace, client: AgentClient) -> int:
    query: dict[str, Any] = {"label": args.filter_label or None, "name": args.filter_name}
    if not args.all:
        query["status"] = ["running", "paused", "restarting"]
    rows = client.request("GET", "/v1/containers", query=query)
    if args.json:
        _print_json(rows)
    elif args.quiet:
        for row in rows:
            print(row["id"][:12])
    else:
        print(f"{'CONTAINER ID':<14}{'NAME':<24}{'STATUS':<12}{'PID':<9}{'EXIT':<6}COMMAND")
        for row in rows:
            exit_code = "" if row["exit_code"] is None else str(row["exit_code"])
            pid = "" if row["pid"] is None else str(row["pid"])
            command = " ".join(row["command"])[:40]
            print(
                f"{row['id'][:12]:<14}{row['name']:<24}{row['status']:<12}{pid:<9}{exit_code:<6}{command}"
            )
    return 0


def _create(
    args: argparse.Namespace, client: AgentClient, *, start: bool = False
) -> dict[str, Any]:
    name = args.name or _generated_name()
    body = {"name": name, "spec": _build_spec(args), "start": start, "pull": args.pull}
    result: dict[str, Any] = client.request("POST", "/v1/containers", body=body)
    return result


def _create_verb(args: argparse.Namespace, client: AgentClient) -> int:
    print(_create(args, client)["id"])
    return 0


def _run(args: argparse.Namespace, client: AgentClient) -> int:
    container = _create(args, client, start=True)
    name = container["name"]
    if args.detach:
        print(container["id"])
        return 0
    try:
        for chunk in client.stream(
            "GET", client.container_path(name, "logs"), query={"follow": True}
        ):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        result = client.request("POST", client.container_path(name, "wait"), body={})
    finally:
        if args.rm:
            client.request("DELETE", client.container_path(name), query={"force": True})
    code = result.get("exit_code")
    return 255 if code is None else int(code)


def _each(
    verb: str, method: str = "POST", body: Callable[[argparse.Namespace], Any] | None = None
) -> Handler:
    def handler(args: argparse.Namespace, client: AgentClient) -> int:
        status = 0
        for name in args.containers:
            try:
                client.request(
                    method, client.container_path(name, verb), body=body(args) if body else None
                )
                print(name)
            except AgentError as exc:
                print(f"gantry {args.command}: {name}: {exc.detail}", file=sys.stderr)
                status = 1
        return status

    return handler


def _rm(args: argparse.Namespace, client: AgentClient) -> int:
    status = 0
    for name in args.containers:
        try:
            client.request("DELETE", client.container_path(name), query={"force": args.force})
            print(name)
        except AgentError as exc:
            print(f"gantry rm: {name}: {exc.detail}", file=sys.stderr)
            status = 1
    return status


def _wait(args: argparse.Namespace, client: AgentClient) -> int:
    status = 0
    for name in args.containers:
        result = client.request("POST", client.container_path(name, "wait"), body={})
        print("" if result["exit_code"] is None else result["exit_code"])
        status = status or 0
    return status


def _inspect(args: argparse.Namespace, client: AgentClient) -> int:
    found = [client.request("GET", client.container_path(name)) for name in args.containers]
    _print_json(found)
    return 0


def _logs(args: argparse.Namespace, client: AgentClient) -> int:
    """Each line to the terminal's stdout or stderr, as the container wrote it (docker's
    way); the agent sends JSON lines that say which stream a line came from."""
    query: dict[str, Any] = {"follow": args.follow, "tail": args.tail, "format": "json"}
    if args.since is not None:
        query["since"] = args.since
    if args.until is not None:
        query["until"] = args.until
    pending = b""
    for chunk in client.stream("GET", client.container_path(args.container, "logs"), query=query):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            if raw:
                _write_log_line(json.loads(raw), args.timestamps)
    return 0


def _write_log_line(line: dict[str, Any], timestamps: bool) -> None:
    out = sys.stderr if line.get("stream") == "stderr" else sys.stdout
    text = (f"{line['time']} " if timestamps else "") + line["text"]
    out.buffer.write(text.encode("utf-8", "surrogateescape"))
    if not line.get("partial"):
        out.buffer.write(b"\n")
    out.buffer.flush()


def _exec(args: argparse.Namespace, client: AgentClient) -> int:
    body: dict[str, Any] = {"command": args.command_args, "env": _pairs(args.env, "--env")}
    if args.user:
        body["user"] = args.user
    if args.workdir:
        body["workdir"] = args.workdir
    if args.interactive or args.tty:
        return _exec_session(args, client, body)
    result = client.request("POST", client.container_path(args.container, "exec"), body=body)
    sys.stdout.write(result["stdout"])
    sys.stderr.write(result["stderr"])
    return int(result["rc"])


def _stats(args: argparse.Namespace, client: AgentClient) -> int:
    names = args.containers or [
        row["name"] for row in client.request("GET", "/v1/containers", query={"status": "running"})
    ]
    found = [client.request("GET", client.container_path(name, "stats")) for name in names]
    if args.json:
        _print_json(found)
        return 0
    header = f"{'CONTAINER ID':<14}{'NAME':<24}{'CPU SEC':>10}"
    print(f"{header}{'MEM USAGE':>14}{'MEM LIMIT':>14}{'PIDS':>7}")
    for item in found:
        cpu = item.get("cpu", {}).get("usage", {}).get("total", 0) / 1e9
        memory = item.get("memory", {}).get("usage", {})
        limit = memory.get("limit", 0)
        limit_text = "-" if not limit or limit >= 1 << 62 else _size(limit)
        pids = item.get("pids", {}).get("current", 0)
        print(
            f"{item['id'][:12]:<14}{item['name']:<24}{cpu:>10.2f}"
            f"{_size(memory.get('usage', 0)):>14}{limit_text:>14}{pids:>7}"
        )
    return 0


def _size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}TiB"


def _exec_session(args: argparse.Namespace, client: AgentClient, body: dict[str, Any]) -> int:
    """``exec -i``/``-it``: stream over the agent's websocket, this terminal in raw mode."""
    import shutil
    import signal
    import termios
    import threading
    import tty as tty_module

    body["tty"] = bool(args.tty)
    if args.tty:
        size = shutil.get_terminal_size()
        body["width"], body["height"] = size.columns, size.lines
    ws = client.websocket(client.container_path(args.container, "exec", "ws"))
    saved = None
    if args.tty and os.isatty(0):
        saved = termios.tcgetattr(0)
        tty_module.setraw(0)

    def pump_stdin() -> None:
        try:
            while data := os.read(0, 65536):
                ws.send(data)
            if not args.tty:
                ws.send(json.dumps({"type": "close_stdin"}))
        except Exception:  # the session ended meanwhile: nothing to send to
            return

    def resize(_signum: int, _frame: Any) -> None:
        size = shutil.get_terminal_size()
        ws.send(json.dumps({"type": "resize", "width": size.columns, "height": size.lines}))

    try:
        ws.send(json.dumps(body))
        if args.interactive:
            threading.Thread(target=pump_stdin, daemon=True).start()
        if args.tty:
            signal.signal(signal.SIGWINCH, resize)
        for message in ws:
            if isinstance(message, bytes):
                stream = sys.stdout.buffer
                if not args.tty:
                    stream = sys.stderr.buffer if message[:1] == b"\x02" else sys.stdout.buffer
                    message = message[1:]
                stream.write(message)
                stream.flush()
                continue
            control = json.loads(message)
            if control.get("type") == "exit":
                return int(control["rc"])
            if control.get("type") == "error":
                raise AgentError(
                    int(control.get("status_code", 400)), control["detail"], control.get("field")
                )
        return 255
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        ws.close()


def register(subparsers: Any) -> None:
    common = _client_options()
    ps = subparsers.add_parser("ps", parents=[common], help="list containers")
    ps.add_argument("-a", "--all", action="store_true", help="all containers, not only running")
    ps.add_argument("-q", "--quiet", action="store_true")
    ps.add_argument("--json", action="store_true")
    ps.add_argument("--filter-label", dest="filter_label", action="append", default=[])
    ps.add_argument("--filter-name", dest="filter_name")
    ps.set_defaults(handler=_wrap(_ps))

    for verb, helptext in (
        ("run", "create and start a container"),
        ("create", "create a container"),
    ):
        parser = subparsers.add_parser(verb, parents=[common], help=helptext, add_help=False)
        parser.add_argument("--help", action="help")
        _spec_options(parser)
        if verb == "run":
            parser.add_argument("-d", "--detach", action="store_true")
            parser.add_argument("--rm", action="store_true")
            parser.set_defaults(handler=_wrap(_run))
        else:
            parser.set_defaults(handler=_wrap(_create_verb))

    def signal_body(args: argparse.Namespace) -> dict[str, Any]:
        return {"signal": args.signal}

    def stop_body(args: argparse.Namespace) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if args.time is not None:
            body["timeout"] = args.time
        if getattr(args, "signal", None):
            body["signal"] = args.signal
        return body

    simple: tuple[tuple[str, str, Handler], ...] = (
        ("start", "start containers", _each("start")),
        ("pause", "freeze containers", _each("pause")),
        ("unpause", "thaw containers", _each("unpause")),
        ("stop", "stop containers (signal, timeout, then KILL)", _each("stop", body=stop_body)),
        ("restart", "restart containers", _each("restart", body=stop_body)),
        ("kill", "send a signal to containers", _each("kill", body=signal_body)),
        ("rm", "remove containers", _rm),
        ("wait", "wait for containers to stop; print their exit codes", _wait),
        ("inspect", "containers as JSON", _inspect),
    )
    for verb, helptext, handler in simple:
        parser = subparsers.add_parser(verb, parents=[common], help=helptext)
        parser.add_argument("containers", nargs="+", metavar="CONTAINER")
        if verb in ("stop", "restart"):
            parser.add_argument("-t", "--time", type=float, help="seconds before KILL")
        if verb == "stop":
            parser.add_argument("-s", "--signal")
        if verb == "kill":
            parser.add_argument("-s", "--signal", default="SIGKILL")
        if verb == "rm":
            parser.add_argument("-f", "--force", action="store_true")
        parser.set_defaults(handler=_wrap(handler))

    stats = subparsers.add_parser(
        "stats", parents=[common], help="CPU, memory and pids of containers"
    )
    stats.add_argument("containers", nargs="*", metavar="CONTAINER")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(handler=_wrap(_stats))

    logs = subparsers.add_parser("logs", parents=[common], help="a container's output")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("-n", "--tail", default="all", help="the last N lines (default all)")
    logs.add_argument("--since", help="lines from this time: RFC 3339, Unix seconds or 10m ago")
    logs.add_argument("--until", help="lines up to this time (same forms as --since)")
    logs.add_argument("-t", "--timestamps", action="store_true", help="show each line's time")
    logs.add_argument("container")
    logs.set_defaults(handler=_wrap(_logs))

    exec_ = subparsers.add_parser("exec", parents=[common], help="run a command in a container")
    exec_.add_argument("-i", "--interactive", action="store_true")
    exec_.add_argument("-t", "--tty", action="store_true")
    exec_.add_argument("-e", "--env", action="append", default=[])
    exec_.add_argument("-u", "--user")
    exec_.add_argument("-w", "--workdir")
    exec_.add_argument("container")
    exec_.add_argument("command_args", nargs=argparse.REMAINDER, metavar="COMMAND")
    exec_.set_defaults(handler=_wrap(_exec))


def _wrap(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            settings = ClientSettings.from_env(
                url=args.url, token=args.token, cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca
            )
            return handler(args, AgentClient(settings))
        except AgentError as exc:
            print(f"gantry {args.command}: {exc.detail}", file=sys.stderr)
            return 125 if exc.status == 0 or exc.status >= 400 else 1

    return run


VERBS = (
    "ps",
    "run",
    "create",
    "start",
    "stop",
    "restart",
    "kill",
    "rm",
    "wait",
    "exec",
    "logs",
    "inspect",
    "pause",
    "unpause",
    "stats",
)
