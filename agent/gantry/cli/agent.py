"""``gantry agent serve`` and ``gantry agent token``.

Settings come from ``/etc/gantry/agent.toml`` (``--config``), and every key is also a
flag; a flag wins over the file. Keys: ``root``, ``socket``, ``listen``, ``tls_cert``,
``tls_key``, ``client_ca``, ``tokens``, ``cgroup_parent``, ``log_level``,
``log_max_size`` and ``log_max_files`` (containers' log rotation when their spec does not
say; docs/logs.md), and the
``[registries]`` table (``insecure``, ``ca_files``, ``credentials``; flags
``--insecure-registry HOST:PORT`` and ``--registry-ca HOST:PORT=FILE`` add to it), and the
``[network]`` table (``default_subnet``, ``default_bridge``, ``cni_plugin_dirs``,
``cni_config_dir``, ``nft_table``, ``subnet_pool``; flags ``--network-default-subnet`` …,
``--cni-plugin-dir`` repeatable).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tomllib
from pathlib import Path
from typing import Any, Final

__all__ = ["DEFAULT_CONFIG", "load_settings", "register"]

DEFAULT_CONFIG: Final = Path("/etc/gantry/agent.toml")
DEFAULTS: Final[dict[str, str]] = {
    "root": "/var/lib/gantry",
    "socket": "/run/gantry/agent.sock",
    "cgroup_parent": "/gantry",
    "log_level": "info",
}
PATH_KEYS: Final = ("root", "socket", "tls_cert", "tls_key", "client_ca", "tokens")
STRING_KEYS: Final = ("listen", "cgroup_parent", "log_level")
LOG_LEVELS: Final = ("critical", "error", "warning", "info", "debug")
LOG_ROTATION_KEYS: Final = ("log_max_size", "log_max_files")


class SettingsError(ValueError):
    """A setting is wrong; the message names the key (and the file)."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "agent", help="the host agent (serve its HTTP API, manage tokens)"
    )
    verbs = parser.add_subparsers(dest="agent_command", metavar="VERB")
    serve = verbs.add_parser(
        "serve", help="serve the agent's API on a unix socket (and optionally TLS)"
    )
    serve.add_argument(
        "--config", type=Path, help=f"TOML settings file (default {DEFAULT_CONFIG}, if it exists)"
    )
    serve.add_argument("--root", help=f"state directory (default {DEFAULTS['root']})")
    serve.add_argument("--socket", help=f"unix socket path (default {DEFAULTS['socket']})")
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="also serve HTTPS on this address (needs TLS and client auth)",
    )
    serve.add_argument(
        "--tls-cert", dest="tls_cert", metavar="FILE", help="server certificate (PEM)"
    )
    serve.add_argument("--tls-key", dest="tls_key", metavar="FILE", help="server private key (PEM)")
    serve.add_argument(
        "--client-ca", dest="client_ca", metavar="FILE", help="CA that signs client certificates"
    )
    serve.add_argument(
        "--tokens", metavar="FILE", help="file of bearer token hashes (see `gantry agent token`)"
    )
    serve.add_argument(
        "--cgroup-parent",
        dest="cgroup_parent",
        help=f"parent cgroup of containers (default {DEFAULTS['cgroup_parent']})",
    )
    serve.add_argument(
        "--log-level", dest="log_level", choices=LOG_LEVELS, help="log level (default info)"
    )
    serve.add_argument(
        "--insecure-registry",
        dest="insecure_registries",
        action="append",
        metavar="HOST:PORT",
        help="a registry reached over plain HTTP (loopback ones always are); repeatable",
    )
    serve.add_argument(
        "--registry-ca",
        dest="registry_cas",
        action="append",
        metavar="HOST:PORT=FILE",
        help="a CA bundle (PEM) for one registry's TLS; repeatable",
    )
    serve.add_argument(
        "--log-max-size",
        dest="log_max_size",
        metavar="SIZE",
        help="rotate a container's log at this size, e.g. 10m; 0 never (default 10m)",
    )
    serve.add_argument(
        "--log-max-files",
        dest="log_max_files",
        metavar="N",
        help="rotated log files kept per container (default 3)",
    )
    _network_flags(serve)
    serve.set_defaults(handler=_serve)
    token = verbs.add_parser(
        "token", help="make a bearer token and append its hash to a token file"
    )
    token.add_argument(
        "--tokens", required=True, metavar="FILE", help="the token file the agent reads (--tokens)"
    )
    token.set_defaults(handler=_token)
    parser.set_defaults(handler=lambda _args: _usage(parser))


NETWORK_FLAGS: Final = {
    "default_subnet": ("--network-default-subnet", "subnet of the default network (10.88.0.0/16)"),
    "default_bridge": ("--network-default-bridge", "bridge of the default network (gantry0)"),
    "nft_table": ("--network-nft-table", "Gantry's nftables table, inet family (gantry)"),
    "subnet_pool": ("--network-subnet-pool", "where new networks' /24s come from (10.90.0.0/15)"),
    "cni_config_dir": ("--cni-config-dir", "CNI configuration directory (/etc/cni/net.d)"),
}


def _network_flags(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("network ([network] in the config file)")
    for key, (flag, text) in NETWORK_FLAGS.items():
        group.add_argument(flag, dest=f"network_{key}", metavar="VALUE", help=text)
    group.add_argument(
        "--cni-plugin-dir",
        dest="network_cni_plugin_dirs",
        action="append",
        metavar="DIR",
        help="where CNI plugins are (repeatable; default /usr/lib/cni)",
    )


def _network_settings(table: Any, args: argparse.Namespace, path: Path | None) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: network must be a table ([network]), got {table!r}")
    out = dict(table)
    for key in (*NETWORK_FLAGS, "cni_plugin_dirs"):
        value = getattr(args, f"network_{key}", None)
        if value is not None:
            out[key] = value
    return out


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def load_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the TOML file, then the flags."""
    settings: dict[str, Any] = dict(DEFAULTS)
    network: Any = {}
    path: Path | None = args.config
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: not valid TOML: {exc}") from None
        network = data.pop("network", {})
        for key, value in data.items():
            if key == "registries":
                if not isinstance(value, dict):
                    raise SettingsError(f"{path}: [registries] must be a table")
                settings["registries"] = value
                continue
            if key in LOG_ROTATION_KEYS:
                settings[key] = value
                continue
            if key not in PATH_KEYS + STRING_KEYS:
                raise SettingsError(
                    f"{path}: unknown key {key!r} (known: {', '.join(PATH_KEYS + STRING_KEYS)})"
                )
            if not isinstance(value, str):
                raise SettingsError(f"{path}: {key} must be a string, got {value!r}")
            settings[key] = value
    for key in PATH_KEYS + STRING_KEYS + LOG_ROTATION_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    _log_rotation(settings)
    _registry_flags(settings, args)
    if settings["log_level"] not in LOG_LEVELS:
        raise SettingsError(
            f"log_level: must be one of {', '.join(LOG_LEVELS)}, got {settings['log_level']!r}"
        )
    for key in PATH_KEYS:
        if settings.get(key) is not None:
            settings[key] = Path(settings[key]).absolute()
    settings["network"] = _network_settings(network, args, path)
    return settings


def _log_rotation(settings: dict[str, Any]) -> None:
    """``log_max_size`` (bytes or ``"10m"``) and ``log_max_files`` checked as the shim
    checks them; ``SettingsError`` naming the key."""
    from gantry.engine.errors import Invalid
    from gantry.engine.spec import parse_size
    from gantry.runtime.shim import LogOptions

    if "log_max_size" in settings:
        try:
            settings["log_max_size"] = parse_size(settings["log_max_size"], "log_max_size")
        except Invalid as exc:
            raise SettingsError(exc.detail) from None
    if "log_max_files" in settings:
        value = settings["log_max_files"]
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"log_max_files: must be a number, got {value!r}")
        settings["log_max_files"] = value
    try:
        LogOptions(Path("/"), max_size=settings.get("log_max_size", 0),
                   max_files=settings.get("log_max_files", 1))  # fmt: skip
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _registry_flags(settings: dict[str, Any], args: argparse.Namespace) -> None:
    """``--insecure-registry`` and ``--registry-ca`` added to the ``[registries]`` table."""
    insecure = getattr(args, "insecure_registries", None) or []
    cas = getattr(args, "registry_cas", None) or []
    if not insecure and not cas:
        return
    table = dict(settings.get("registries") or {})
    if insecure:
        table["insecure"] = [*table.get("insecure", []), *insecure]
    if cas:
        files = dict(table.get("ca_files", {}))
        for text in cas:
            host, sep, file = text.partition("=")
            if not sep or not host or not file:
                raise SettingsError(f"registry-ca: want HOST:PORT=FILE, got {text!r}")
            files[host] = str(Path(file).absolute())
        table["ca_files"] = files
    settings["registries"] = table


def _serve(args: argparse.Namespace) -> int:
    from gantry.api.auth import TokenFileError
    from gantry.api.server import ServeError, ServerSettings, serve
    from gantry.engine import EngineError
    from gantry.engine.images import RegistrySettingsError

    try:
        settings = load_settings(args)
    except SettingsError as exc:
        print(f"gantry agent serve: {exc}", file=sys.stderr)
        return 2
    _log_to_stderr(settings["log_level"])
    if os.geteuid() != 0:
        print(
            "gantry agent serve: must run as root (it creates namespaces, mounts and cgroups)",
            file=sys.stderr,
        )
        return 1
    try:
        return serve(ServerSettings(**settings))
    except (ServeError, TokenFileError, RegistrySettingsError) as exc:
        print(f"gantry agent serve: {exc}", file=sys.stderr)
        return 2
    except EngineError as exc:
        print(f"gantry agent serve: {exc.detail}", file=sys.stderr)
        return 1


class _RawStderrHandler(logging.Handler):
    """Log records written with one ``os.write`` to fd 2, below Python's buffered stderr.

    The agent forks container supervisors from a multi-threaded process: a child that
    writes to ``sys.stderr`` while another thread of the parent held its buffer's lock at
    the fork would wait forever for that lock (it is not re-created in the child, unlike
    the logging module's own locks)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "replace")
            view = memoryview(data)
            while view:
                view = view[os.write(2, view) :]
        except Exception:  # a log line must never break the agent
            self.handleError(record)


def _log_to_stderr(level: str) -> None:
    handler = _RawStderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _token(args: argparse.Namespace) -> int:
    from gantry.api.auth import new_token

    token, line = new_token()
    path = Path(args.tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    print(token)
    print(
        f"gantry agent token: its hash is appended to {path}; the agent reads it at start-up",
        file=sys.stderr,
    )
    return 0
