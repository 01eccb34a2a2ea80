"""A small HTTP client of the agent (stdlib only): a unix socket or HTTPS with a client
certificate or a bearer token. Used by the ``gantry`` client verbs."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, Final
from urllib.parse import quote, urlencode, urlsplit

__all__ = ["DEFAULT_URL", "AgentClient", "AgentError", "ClientSettings"]

DEFAULT_URL: Final = "unix:///run/gantry/agent.sock"


class AgentError(Exception):
    """The agent refused a request (``status`` >= 400) or could not be reached (0)."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class ClientSettings:
    url: str = DEFAULT_URL
    token: str | None = None
    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    timeout: float | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> ClientSettings:
        values: dict[str, Any] = {
            "url": os.environ.get("GANTRY_URL", DEFAULT_URL),
            "token": os.environ.get("GANTRY_TOKEN"),
            "cert": os.environ.get("GANTRY_TLS_CERT"),
            "key": os.environ.get("GANTRY_TLS_KEY"),
            "ca": os.environ.get("GANTRY_TLS_CA"),
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


class AgentClient:
    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        parts = urlsplit(settings.url)
        self._scheme = parts.scheme
        if parts.scheme == "unix":
            self._path = parts.path
        elif parts.scheme == "https":
            self._host = parts.hostname or "localhost"
            self._port = parts.port or 8443
        else:
            raise AgentError(
                0, f"url: want unix:///path or https://host:port, got {settings.url!r}", "url"
            )

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._scheme == "unix":
            return _UnixConnection(self._path, timeout)
        context = ssl.create_default_context(cafile=self.settings.ca)
        if self.settings.cert:
            context.load_cert_chain(self.settings.cert, self.settings.key)
        return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=context)

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw: bytes | IO[bytes] | None = None,
        query: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> http.client.HTTPResponse:
        if query:
            pairs = [(k, v) for k, v in query.items() if v is not None]
            flat: list[tuple[str, str]] = []
            for key, value in pairs:
                for item in value if isinstance(value, list) else [value]:
                    flat.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
            if flat:
                path = f"{path}?{urlencode(flat)}"
        headers = {"Accept": "application/json"}
        data: bytes | IO[bytes] | None = None
        if raw is not None:
            data = raw
            headers["Content-Type"] = "application/x-tar"
            if not isinstance(raw, bytes):  # a file, streamed by http.client
                headers["Content-Length"] = str(os.fstat(raw.fileno()).st_size - raw.tell())
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        connection = self._connection(timeout if timeout is not None else self.settings.timeout)
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise AgentError(0, f"cannot reach the agent at {self.settings.url}: {exc}") from None
        if response.status >= 400:
            payload = response.read()
            connection.close()
            try:
                error = json.loads(payload)
                raise AgentError(response.status, str(error.get("detail")), error.get("field"))
            except (ValueError, AttributeError):
                raise AgentError(response.status, payload.decode("utf-8", "replace")) from None
        return response

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        try:
            payload = response.read()
        finally:
            response.close()
        return json.loads(payload) if payload else None

    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[bytes]:
        response = self._send(method, path, **kwargs)
        try:
            while chunk := response.read1(65536):
                yield chunk
        finally:
            response.close()

    def websocket(self, path: str) -> Any:
        """A websocket connection to ``path`` (the ``websockets`` package's sync client)."""
        from websockets.sync.client import connect, unix_connect

        headers = {"Authorization": f"Bearer {self.settings.token}"} if self.settings.token else {}
        try:
            if self._scheme == "unix":
                return unix_connect(self._path, f"ws://localhost{path}", additional_headers=headers)
            context = ssl.create_default_context(cafile=self.settings.ca)
            if self.settings.cert:
                context.load_cert_chain(self.settings.cert, self.settings.key)
            url = f"wss://{self._host}:{self._port}{path}"
            return connect(url, ssl=context, additional_headers=headers)
        except (OSError, ValueError) as exc:
            raise AgentError(0, f"cannot reach the agent at {self.settings.url}: {exc}") from None

    @staticmethod
    def container_path(name: str, *rest: str) -> str:
        return "/".join(["/v1/containers", quote(name, safe=""), *rest])
