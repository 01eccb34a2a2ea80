"""The agent's TCP listener on loopback: TLS with client certificates (checked against
--client-ca) and bearer tokens (stored hashed). Certificates are made in the test with the
openssl command; every documented route is tried without and with wrong credentials."""

from __future__ import annotations

import functools
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import agent_support as ags
import pytest
import rootfs_support as rs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]

GANTRY = Path(sys.executable).parent / "gantry"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
    )
    return key, cert


def _signed(
    directory: Path, name: str, ca: tuple[Path, Path], extensions: str
) -> tuple[Path, Path]:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={name}",
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca[1]),
        "-CAkey",
        str(ca[0]),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("pki")
    ca = _ca(directory, "gantry-test-ca")
    rogue_ca = _ca(directory, "rogue-ca")
    return {
        "ca": ca,
        "server": _signed(
            directory, "server", ca, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        ),
        "client": _signed(directory, "client", ca, "extendedKeyUsage=clientAuth\n"),
        "rogue": _signed(directory, "rogue", rogue_ca, "extendedKeyUsage=clientAuth\n"),
        "dir": directory,
    }


def _token(tokens: Path) -> str:
    done = subprocess.run(
        [str(GANTRY), "agent", "token", "--tokens", str(tokens)],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def _context(pki: dict[str, Any], client: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"][1]))
    if client is not None:
        key, cert = pki[client]
        context.load_cert_chain(str(cert), str(key))
    return context


def _call(
    port: int, context: ssl.SSLContext, method: str, path: str, token: str | None = None
) -> tuple[int, dict[str, Any] | None]:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(
            method, path, body=b"{}" if method in ("POST", "PUT") else None, headers=headers
        )
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(payload)
    except ValueError:
        return response.status, None


def _documented_routes(agent: ags.Agent) -> list[tuple[str, str]]:
    schema = agent.req("GET", "/openapi.json")
    routes = []
    for path, methods in schema["paths"].items():
        concrete = (
            path.replace("{name}", "nobody").replace("{ref}", "img").replace("{operation}", "op")
        )
        routes += [(method.upper(), concrete) for method in methods]
    routes += [("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/no/such/route")]
    return routes


def test_tls_port_needs_a_client_certificate_or_a_token_on_every_route(
    pki: dict[str, Any], no_leftovers: None
) -> None:
    tokens = pki["dir"] / "tokens"
    token = _token(tokens)
    assert token not in tokens.read_text()  # only its hash is stored
    port = ags.free_port()
    flags = [
        "--listen",
        f"127.0.0.1:{port}",
        "--tls-cert",
        str(pki["server"][1]),
        "--tls-key",
        str(pki["server"][0]),
        "--client-ca",
        str(pki["ca"][1]),
        "--tokens",
        str(tokens),
    ]
    with ags.running_agent(flags) as (agent, rootfs):
        agent.put(
            "web",
            {
                "rootfs": str(rootfs),
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.05; done"],
            },
        )
        routes = _documented_routes(agent)
        assert len(routes) > 20
        anonymous = _context(pki)
        for method, path in routes:
            status, body = _call(port, anonymous, method, path)
            assert status == 401, (method, path, status, body)
            assert body is not None and body["field"] is None and "authentication" in body["detail"]
            status, _body = _call(port, anonymous, method, path, token="not-the-token")
            assert status == 403, (method, path, status)
        # Nothing was done by all those requests.
        assert [row["status"] for row in agent.req("GET", "/v1/containers")] == ["running"]

        assert _call(port, anonymous, "GET", "/v1/containers", token=token)[0] == 200
        status, body = _call(port, _context(pki, "client"), "GET", "/v1/containers/web")
        assert status == 200 and body is not None and body["state"]["status"] == "running"
        assert _call(port, _context(pki, "client"), "GET", "/metrics")[0] == 200
        # A certificate from another CA does not get through the handshake.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _call(port, _context(pki, "rogue"), "GET", "/v1/containers")
        # The websocket of interactive exec: refused without credentials, served with them.
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        url = f"wss://127.0.0.1:{port}/v1/containers/web/exec/ws"

        def refused_status(headers: dict[str, str]) -> int:
            with pytest.raises(InvalidStatus) as refused:
                connect(url, ssl=anonymous, additional_headers=headers, open_timeout=30)
            return int(refused.value.response.status_code)

        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            what = f"websocket {url} with headers {sorted(headers)}"
            assert ags.within(90, what, functools.partial(refused_status, headers)) == 403

        def session() -> Any:
            with connect(
                url,
                ssl=anonymous,
                additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=30,
            ) as ws:
                ws.send(json.dumps({"command": ["sh", "-c", "exit 9"]}))
                return json.loads(ws.recv(timeout=60))

        assert ags.within(150, f"websocket {url} with the token", session) == {
            "type": "exit",
            "rc": 9,
        }
        # The unix socket is unaffected: no credentials needed there.
        assert agent.req("GET", "/v1/info")["api_version"] == "v1"


def test_certificate_only_listener_refuses_clients_without_one(
    pki: dict[str, Any], no_leftovers: None
) -> None:
    port = ags.free_port()
    flags = [
        "--listen",
        f"127.0.0.1:{port}",
        "--tls-cert",
        str(pki["server"][1]),
        "--tls-key",
        str(pki["server"][0]),
        "--client-ca",
        str(pki["ca"][1]),
    ]
    with ags.running_agent(flags):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _call(port, _context(pki), "GET", "/livez")
        assert _call(port, _context(pki, "client"), "GET", "/livez") == (200, {"status": "ok"})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--listen", "127.0.0.1:PORT"], "TLS"),
        (
            ["--listen", "127.0.0.1:PORT", "--tls-cert", "CERT", "--tls-key", "KEY"],
            "no unauthenticated mode",
        ),
        (["--tls-cert", "CERT"], "only meaningful with --listen"),
        (["--listen", "nonsense"], "HOST:PORT"),
    ],
)
def test_serve_refuses_unauthenticated_tcp(
    pki: dict[str, Any], tmp_path: Path, extra: list[str], message: str
) -> None:
    port = str(ags.free_port())
    args = [
        a.replace("PORT", port)
        .replace("CERT", str(pki["server"][1]))
        .replace("KEY", str(pki["server"][0]))
        for a in extra
    ]
    done = subprocess.run(
        [
            str(GANTRY),
            "agent",
            "serve",
            "--root",
            str(tmp_path / "root"),
            "--socket",
            str(tmp_path / "s.sock"),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "s.sock").exists() and not (tmp_path / "root").exists()


def _tls_agent_flags(pki: dict[str, Any], port: int, tokens: Path) -> list[str]:
    return [
        "--listen",
        f"127.0.0.1:{port}",
        "--tls-cert",
        str(pki["server"][1]),
        "--tls-key",
        str(pki["server"][0]),
        "--client-ca",
        str(pki["ca"][1]),
        "--tokens",
        str(tokens),
    ]


def test_refused_websockets_over_tls_never_hang(pki: dict[str, Any], no_leftovers: None) -> None:
    """The flake this guards against: the agent sent TLS 1.3 session tickets right after
    the handshake; websockets' reader thread read them while the main thread wrote the
    upgrade request, OpenSSL lost the request, and the client waited forever. Without
    tickets the race has nothing to read; every attempt is refused with 403."""
    tokens = pki["dir"] / "tokens-ws"
    _token(tokens)
    port = ags.free_port()
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = f"wss://127.0.0.1:{port}/v1/containers/web/exec/ws"
    anonymous = _context(pki)

    def attempts() -> list[int]:
        statuses = []
        for index in range(200):
            headers = {"Authorization": "Bearer wrong"} if index % 2 else {}
            with pytest.raises(InvalidStatus) as refused:
                connect(url, ssl=anonymous, additional_headers=headers, open_timeout=30)
            statuses.append(refused.value.response.status_code)
        return statuses

    with ags.running_agent(_tls_agent_flags(pki, port, tokens)):
        assert set(ags.within(300, f"200 refused websockets at {url}", attempts)) == {403}


def test_tls_port_sends_no_session_tickets_and_drops_silent_clients(
    pki: dict[str, Any], no_leftovers: None
) -> None:
    tokens = pki["dir"] / "tokens-idle"
    token = _token(tokens)
    port = ags.free_port()
    with ags.running_agent(_tls_agent_flags(pki, port, tokens)):
        context = _context(pki)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        with (
            socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            request = f"GET /livez HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            tls.sendall(request.encode())
            answer = b""
            while b'{"status":"ok"}' not in answer:
                chunk = tls.recv(65536)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")
            # A TLS 1.3 client learns a resumable session only from a ticket.
            assert tls.session is None or not tls.session.has_ticket
        # A client that completes the handshake and never sends a request is closed by the
        # agent (the keep-alive timeout), instead of holding a connection forever.
        with (
            socket.create_connection(("127.0.0.1", port), timeout=60) as raw,
            _context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.recv(65536) == b""
