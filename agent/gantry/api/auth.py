"""Authentication of TCP clients: a client certificate checked in the TLS handshake, or a
bearer token compared with the stored hashes. The unix socket needs none (its file mode
decides who connects), so only the TCP server wraps the app in :class:`RequireAuth`.

Token file: one token hash per line, ``sha256:<hex>`` (``gantry agent token`` prints a new
token and its line); ``#`` comments and blank lines are ignored. A token is a random
secret, so one round of SHA-256 is enough (a password would need a slow hash); the
comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "PEER_CERT_KEY",
    "PeerCertProtocol",
    "RequireAuth",
    "TokenFileError",
    "hash_token",
    "load_token_hashes",
    "new_token",
    "server_context",
]

PEER_CERT_KEY = "gantry.peer_certificate"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TokenFileError(ValueError):
    """The token file cannot be used; the message names the file and line."""


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh token and the line to store for it."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def load_token_hashes(path: Path) -> tuple[str, ...]:
    hashes: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot read the token file: {exc.strerror}") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kind, _sep, digest = line.partition(":")
        if (
            kind != "sha256"
            or len(digest) != 64
            or any(c not in "0123456789abcdef" for c in digest)
        ):
            raise TokenFileError(f"{path}:{number}: not a token hash (want sha256:<64 hex digits>)")
        hashes.append(line)
    if not hashes:
        raise TokenFileError(f"{path}: holds no token hash")
    return tuple(hashes)


def server_context(
    cert: Path, key: Path, client_ca: Path | None, *, tokens: bool
) -> ssl.SSLContext:
    """TLS 1.2+ server context. With a client CA the certificate is required, unless
    tokens are configured too: then either one authenticates the client."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    # No TLS 1.3 session tickets. The server sends them unasked right after the handshake,
    # and a client with a reader thread (websockets' sync client) then runs SSL_read on
    # them while its main thread's SSL_write sends the request: OpenSSL does not allow
    # both at once on one connection, the request is lost, and the connection hangs with
    # the agent waiting for a request and the client for an answer. No client of the agent
    # resumes sessions, so the tickets bought nothing.
    context.num_tickets = 0
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_OPTIONAL if tokens else ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


class PeerCertProtocol(H11Protocol):
    """uvicorn's h11 protocol that puts "did the client present a verified certificate"
    into the request's state (uvicorn's scope has no TLS details of its own)."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        verified = bool(ssl_object is not None and ssl_object.getpeercert())
        self.app_state = {**self.app_state, PEER_CERT_KEY: verified}
        # uvicorn arms its keep-alive timer only after a first response: a client that
        # completes the TLS handshake and never sends a request would hold a connection
        # (and a file descriptor) of the agent forever. Treat it like an idle keep-alive
        # connection; the first bytes received cancel the timer (uvicorn's data_received).
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )


class RequireAuth:
    """ASGI wrapper: a request passes with a verified client certificate or a bearer
    token whose hash is stored; otherwise 401 (no credentials) or 403 (wrong ones)."""

    def __init__(self, app: ASGIApp, token_hashes: tuple[str, ...], *, certificates: bool) -> None:
        self.app = app
        self.token_hashes = token_hashes
        self.certificates = certificates

    def _token_ok(self, scope: Scope) -> bool:
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                scheme, _sep, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    presented = hash_token(token.strip())
                    return any(hmac.compare_digest(presented, h) for h in self.token_hashes)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self.certificates and scope.get("state", {}).get(PEER_CERT_KEY):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket" and not self._token_ok(scope):
            await _deny_websocket(send)
            return
        header = ""
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                header = value.decode("latin-1")
        scheme, _sep, token = header.partition(" ")
        if not header:
            await _deny(
                send, 401, "authentication required: a client certificate or a bearer token"
            )
            return
        if scheme.lower() != "bearer" or not token.strip():
            await _deny(send, 401, "authentication required: use 'Authorization: Bearer <token>'")
            return
        presented = hash_token(token.strip())
        if not any(hmac.compare_digest(presented, stored) for stored in self.token_hashes):
            await _deny(send, 403, "the bearer token is not valid")
            return
        await self.app(scope, receive, send)


async def _deny_websocket(send: Send) -> None:
    # Closing before the handshake is accepted: the server answers HTTP 403.
    await send({"type": "websocket.close", "code": 1008})


async def _deny(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail, "field": None}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="gantry"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
