"""Serving the app: a unix socket always, a TLS port with client authentication optionally.

Two uvicorn servers share one event loop and one app: the unix socket's as it is (its file
mode decides who connects), the TCP one wrapped in :class:`~gantry.api.auth.RequireAuth`
and TLS. SIGTERM and SIGINT stop both gracefully (in-flight requests finish, followers of
logs and events end); the containers keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import signal
import socket
import stat
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from gantry.api.app import create_app
from gantry.api.auth import PeerCertProtocol, RequireAuth, load_token_hashes, server_context
from gantry.engine import Engine
from gantry.engine.core import DEFAULT_LOG_MAX_FILES, DEFAULT_LOG_MAX_SIZE
from gantry.engine.images import registry_options
from gantry.engine.networking import config_from_settings

__all__ = ["ServeError", "ServerSettings", "bind_tcp", "bind_unix", "serve"]

_log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT = 10
SOCKET_GROUP = "gantry"


class ServeError(Exception):
    """The agent cannot serve as configured; the message says which setting is wrong."""


@dataclass(frozen=True)
class ServerSettings:
    root: Path
    socket: Path
    listen: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    tokens: Path | None = None
    cgroup_parent: str = "/gantry"
    log_level: str = "info"
    registries: Mapping[str, Any] | None = None
    """The ``[registries]`` table of agent.toml (gantry.engine.images.registry_options)."""
    network: Mapping[str, Any] | None = None
    log_max_size: int = DEFAULT_LOG_MAX_SIZE
    log_max_files: int = DEFAULT_LOG_MAX_FILES


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ServeError(f"listen: want HOST:PORT, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def check_tcp_settings(settings: ServerSettings) -> None:
    """Refuse any TCP setting that would serve without TLS or without client auth."""
    if settings.listen is None:
        for name in ("tls_cert", "tls_key", "client_ca", "tokens"):
            if getattr(settings, name) is not None:
                raise ServeError(f"{name.replace('_', '-')}: only meaningful with --listen")
        return
    _parse_listen(settings.listen)
    if settings.tls_cert is None or settings.tls_key is None:
        raise ServeError("listen: TCP is served only over TLS: give --tls-cert and --tls-key")
    if settings.client_ca is None and settings.tokens is None:
        raise ServeError(
            "listen: TCP is served only with client authentication: give --client-ca (client "
            "certificates) and/or --tokens (bearer tokens); there is no unauthenticated mode"
        )


def bind_unix(path: Path) -> socket.socket:
    """A listening unix socket at ``path``, mode 0600 (root), or 0660 with group
    ``gantry`` when that group exists. Created under a tight umask, so it is never open
    to others even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ServeError(f"socket: {path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # a stale socket of an agent that died
        else:
            raise ServeError(f"socket: another agent is serving on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ServeError(f"socket: cannot bind {path}: {exc.strerror}") from None
    finally:
        os.umask(old)
    try:
        group = grp.getgrnam(SOCKET_GROUP).gr_gid
    except KeyError:
        os.chmod(path, 0o600)
    else:
        os.chown(path, 0, group)
        os.chmod(path, 0o660)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def bind_tcp(listen: str) -> socket.socket:
    host, port = _parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise ServeError(f"listen: cannot bind {listen}: {exc.strerror}") from None
        raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: serve() installs one handler for
    both servers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def serve(settings: ServerSettings) -> int:
    """Run the agent until SIGTERM or SIGINT; the exit status."""
    check_tcp_settings(settings)
    try:
        network = config_from_settings(settings.network, settings.root)
    except ValueError as exc:
        raise ServeError(str(exc)) from None
    token_hashes: tuple[str, ...] = ()
    context = None
    if settings.listen is not None:
        assert settings.tls_cert is not None and settings.tls_key is not None
        if settings.tokens is not None:
            token_hashes = load_token_hashes(settings.tokens)
        try:
            context = server_context(
                settings.tls_cert, settings.tls_key, settings.client_ca, tokens=bool(token_hashes)
            )
        except (OSError, ValueError) as exc:
            raise ServeError(f"tls-cert/tls-key/client-ca: cannot load: {exc}") from None
    unix_sock = bind_unix(settings.socket)
    tcp_sock = bind_tcp(settings.listen) if settings.listen is not None else None
    try:
        engine = Engine(
            settings.root,
            cgroup_parent=settings.cgroup_parent,
            registries=registry_options(settings.registries),
            network=network,
            log_max_size=settings.log_max_size,
            log_max_files=settings.log_max_files,
        )
    except BaseException:
        unix_sock.close()
        with contextlib.suppress(OSError):
            settings.socket.unlink()
        if tcp_sock is not None:
            tcp_sock.close()
        raise
    app = create_app(engine)
    common = {
        # The CLI's handler on the root logger (see gantry.cli.agent), not uvicorn's own.
        "log_config": None,
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": GRACEFUL_TIMEOUT,
        "access_log": False,
    }
    servers = [_Server(uvicorn.Config(app, lifespan="on", **common))]  # type: ignore[arg-type]
    sockets = [[unix_sock]]
    if tcp_sock is not None:
        guarded = RequireAuth(app, token_hashes, certificates=settings.client_ca is not None)
        config = uvicorn.Config(guarded, lifespan="off", http=PeerCertProtocol, **common)  # type: ignore[arg-type]
        config.load()
        config.ssl = context
        servers.append(_Server(config))
        sockets.append([tcp_sock])

    async def run() -> None:
        loop = asyncio.get_running_loop()

        def stop(sig: int) -> None:
            _log.info(
                "signal %s: stopping the agent; containers keep running", signal.Signals(sig).name
            )
            engine.closing = True
            engine.events.close()
            for server in servers:
                server.should_exit = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig)
        await asyncio.gather(
            *(server.serve(sockets=socks) for server, socks in zip(servers, sockets, strict=True))
        )

    try:
        asyncio.run(run())
    finally:
        with contextlib.suppress(OSError):
            settings.socket.unlink()
    return 0
