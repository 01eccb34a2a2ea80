# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The agent client: URL forms, error documents, the shared argument spec, and the transport.

The transport tests talk to a small HTTP server of the test's own, on a real unix socket
(and, for TLS, on a loopback port with certificates openssl makes for the test): what is
under test is the client's side of the wire (requests it sends, how it reads answers and
failures), not the agent, which the integration targets run for real.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import socketserver
import ssl
import subprocess
import threading

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.gantry.fleet.plugins.module_utils import _agent_client as client_mod
from ansible_collections.gantry.fleet.plugins.module_utils._agent_client import (
    AgentClient,
    AgentConflict,
    AgentError,
    AgentNotFound,
    AgentUnreachable,
    OperationFailed,
    OperationTimeout,
    agent_argument_spec,
    error_details,
    parse_agent_url,
)

# --- URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        ("unix:///run/gantry/agent.sock", ("http://localhost", "/run/gantry/agent.sock")),
        ("unix:///tmp/x y/agent.sock", ("http://localhost", "/tmp/x y/agent.sock")),
        ("/srv/agent.sock", ("http://localhost", "/srv/agent.sock")),
        ("https://node1:8443", ("https://node1:8443", None)),
        ("https://node1:8443/", ("https://node1:8443", None)),
        ("HTTPS://[::1]:8443", ("https://[::1]:8443", None)),
        (" unix:///a.sock ", ("http://localhost", "/a.sock")),
    ],
)
def test_url_forms(url, expected):
    assert parse_agent_url(url) == expected


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://node1:8080", ["plain HTTP", "https://node1:8080"]),
        ("tcp://node1:1", ["unknown scheme", "'tcp'"]),
        ("unix://relative.sock", ["absolute socket path"]),
        ("https://", ["names no host"]),
        ("https://node1:8443/v1", ["path or query"]),
        ("", ["must not be empty"]),
        ("node1:8443", ["unknown scheme"]),
    ],
)
def test_bad_urls_name_the_option(url, words):
    with pytest.raises(AgentError) as info:
        parse_agent_url(url)
    message = str(info.value)
    assert message.startswith("agent_url: ")
    for word in words:
        assert word in message


# --- error documents -----------------------------------------------------------------------


def test_agent_error_document():
    body = {
        "detail": "resources.memory: must be at least 6291456 bytes",
        "field": "spec.resources.memory",
    }
    assert error_details(body) == (body["detail"], "spec.resources.memory")


def test_agent_error_without_field():
    assert error_details({"detail": "images are not available", "field": None}) == (
        "images are not available",
        None,
    )


def test_fastapi_validation_list():
    body = {
        "detail": [
            {"loc": ["body", "spec", "cpus"], "msg": "Input should be a number", "type": "x"},
            {"loc": ["query", "force"], "msg": "bad bool", "type": "y"},
        ]
    }
    message, field = error_details(body)
    assert message == "spec.cpus: Input should be a number; force: bad bool"
    assert field == "spec.cpus"


@pytest.mark.parametrize(
    "body, expected",
    [
        (None, (None, None)),
        ("  plain text  ", ("plain text", None)),
        ({"error": {"message": "nested", "field": "name"}}, ("nested", "name")),
        ({"other": 1}, ('{"other": 1}', None)),
    ],
)
def test_other_error_shapes(body, expected):
    assert error_details(body) == expected


# --- the shared argument spec --------------------------------------------------------------


def validate(spec, params):
    result = ArgumentSpecValidator(spec).validate(params)
    assert not result.error_messages, result.error_messages
    return result.validated_parameters


def test_argument_spec_defaults(monkeypatch):
    for name in list(os.environ):
        if name.startswith("GANTRY_"):
            monkeypatch.delenv(name)
    params = validate(agent_argument_spec(name=dict(type="str")), {"name": "web"})
    assert params["agent_url"] == "unix:///run/gantry/agent.sock"
    assert params["timeout"] == 60
    assert params["validate_certs"] is True
    assert params["agent_token"] is None
    assert params["name"] == "web"


def test_argument_spec_environment(monkeypatch):
    monkeypatch.setenv("GANTRY_AGENT_URL", "https://node1:8443")
    monkeypatch.setenv("GANTRY_AGENT_TOKEN", "s3cret")
    monkeypatch.setenv("GANTRY_AGENT_CA_PATH", "/etc/ca.pem")
    monkeypatch.setenv("GANTRY_AGENT_CLIENT_CERT", "/etc/c.pem")
    monkeypatch.setenv("GANTRY_AGENT_CLIENT_KEY", "/etc/k.pem")
    monkeypatch.setenv("GANTRY_AGENT_VALIDATE_CERTS", "no")
    monkeypatch.setenv("GANTRY_AGENT_TIMEOUT", "7")
    params = validate(agent_argument_spec(), {})
    assert params == {
        "agent_url": "https://node1:8443",
        "agent_token": "s3cret",
        "ca_path": "/etc/ca.pem",
        "client_cert": "/etc/c.pem",
        "client_key": "/etc/k.pem",
        "validate_certs": False,
        "timeout": 7,
    }


def test_argument_spec_task_beats_environment(monkeypatch):
    monkeypatch.setenv("GANTRY_AGENT_URL", "https://node1:8443")
    params = validate(agent_argument_spec(), {"agent_url": "unix:///srv/a.sock"})
    assert params["agent_url"] == "unix:///srv/a.sock"


def test_argument_spec_cli_variable(monkeypatch):
    monkeypatch.delenv("GANTRY_AGENT_URL", raising=False)
    monkeypatch.setenv("GANTRY_URL", "unix:///srv/cli.sock")
    assert validate(agent_argument_spec(), {})["agent_url"] == "unix:///srv/cli.sock"


def test_argument_spec_token_is_secret():
    result = ArgumentSpecValidator(agent_argument_spec()).validate({"agent_token": "s3cret"})
    assert "s3cret" in result._no_log_values


def test_argument_spec_module_option_wins_and_copies():
    spec = agent_argument_spec(timeout=dict(type="int", default=5))
    assert spec["timeout"]["default"] == 5
    # The shared table itself is untouched.
    assert client_mod.AGENT_ARGUMENT_SPEC["timeout"]["default"] == 60
    spec["agent_url"]["default"] = "changed"
    assert client_mod.AGENT_ARGUMENT_SPEC["agent_url"]["default"] == "unix:///run/gantry/agent.sock"


def test_client_rejects_bad_timeout():
    with pytest.raises(AgentError, match="timeout: must be a positive"):
        AgentClient("unix:///x.sock", timeout=0)


def test_client_rejects_unreadable_tls_files(tmp_path):
    with pytest.raises(AgentError, match="ca_path: cannot read"):
        AgentClient("https://localhost:1", ca_path=str(tmp_path / "missing.pem"))


# --- a real socket -------------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    """Answers from the server's `routes`: (method, path) -> callable(handler) -> (status, body)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def address_string(self):
        return "test"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.request_body = self.rfile.read(length) if length else b""
        self.server.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers),
                "body": self.request_body,
            }
        )
        route = self.server.routes.get((self.command, self.path.split("?")[0]))
        if route is None:
            status, body = 404, {"detail": "no route %s" % self.path, "field": None}
        else:
            status, body = route(self)
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_PUT = do_POST = do_DELETE = _answer


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(server):
    server.routes = {}
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def unix_agent(tmp_path):
    path = str(tmp_path / "agent.sock")
    server = serve(UnixServer(path, Handler))
    server.url = "unix://" + path
    yield server
    server.shutdown()
    server.server_close()


def test_get_json(unix_agent):
    unix_agent.routes["GET", "/v1/info"] = lambda h: (200, {"version": "0.1.0"})
    response = AgentClient(unix_agent.url).get("/v1/info")
    assert response.status == 200
    assert response.body == {"version": "0.1.0"}
    assert unix_agent.seen[0]["headers"]["Accept"] == "application/json"
    assert "Authorization" not in unix_agent.seen[0]["headers"]


def test_put_sends_json_query_and_token(unix_agent):
    unix_agent.routes["PUT", "/v1/containers/web"] = lambda h: (200, {"changed": True})
    client = AgentClient(unix_agent.url, token="s3cret")
    response = client.put(
        "/v1/containers/web", body={"state": "running"}, query={"dry_run": True, "x": None}
    )
    assert response.body == {"changed": True}
    seen = unix_agent.seen[0]
    assert seen["path"] == "/v1/containers/web?dry_run=true"
    assert json.loads(seen["body"]) == {"state": "running"}
    assert seen["headers"]["Content-Type"] == "application/json"
    assert seen["headers"]["Authorization"] == "Bearer s3cret"


def test_upload_streams_a_file_as_the_raw_body(unix_agent, tmp_path):
    unix_agent.routes["POST", "/v1/images/load"] = lambda h: (200, {"changed": True})
    archive = tmp_path / "image.tar"
    payload = bytes(range(256)) * 9000
    archive.write_bytes(payload)
    with archive.open("rb") as upload:
        response = AgentClient(unix_agent.url).post(
            "/v1/images/load",
            query={"reference": "a:1"},
            upload=upload,
            content_type="application/x-tar",
        )
    assert response.body == {"changed": True}
    seen = unix_agent.seen[0]
    assert seen["path"] == "/v1/images/load?reference=a%3A1"
    assert seen["headers"]["Content-Type"] == "application/x-tar"
    assert seen["headers"]["Content-Length"] == str(len(payload))
    assert seen["body"] == payload


def test_sink_receives_the_answer_and_errors_still_raise(unix_agent, tmp_path):
    payload = b"tar bytes " * 300000
    unix_agent.routes["POST", "/v1/images/save"] = lambda h: (200, payload)
    unix_agent.routes["POST", "/v1/images/nosave"] = lambda h: (
        404,
        {"detail": "no such image: x:1", "field": "references"},
    )
    client = AgentClient(unix_agent.url)
    with (tmp_path / "out.tar").open("wb") as sink:
        response = client.post("/v1/images/save", body={"references": ["a:1"]}, sink=sink)
    assert response.body is None
    assert (tmp_path / "out.tar").read_bytes() == payload
    assert json.loads(unix_agent.seen[0]["body"]) == {"references": ["a:1"]}
    with (tmp_path / "bad.tar").open("wb") as sink, pytest.raises(client_mod.AgentNotFound) as info:
        client.post("/v1/images/nosave", body={}, sink=sink)
    assert str(info.value) == "no such image: x:1"
    assert (tmp_path / "bad.tar").read_bytes() == b""


def test_path_segments_are_quoted(unix_agent):
    unix_agent.routes["GET", "/v1/images/busybox%3Alatest"] = lambda h: (200, {})
    AgentClient(unix_agent.url).get("/v1/images/" + client_mod.quote_path("busybox:latest"))
    assert unix_agent.seen[0]["path"] == "/v1/images/busybox%3Alatest"


def test_4xx_passes_the_agents_message_on(unix_agent):
    body = {
        "detail": "resources.memory: must be at least 6291456 bytes (6m), got 1024",
        "field": "spec.resources.memory",
    }
    unix_agent.routes["PUT", "/v1/containers/web"] = lambda h: (422, body)
    with pytest.raises(AgentError) as info:
        AgentClient(unix_agent.url).put("/v1/containers/web", body={})
    assert str(info.value) == body["detail"]
    assert info.value.status == 422
    assert info.value.field == "spec.resources.memory"


def test_404_and_409_have_their_own_classes(unix_agent):
    unix_agent.routes["POST", "/v1/containers/web/pause"] = lambda h: (
        409,
        {"detail": "container 'web' is stopped: cannot pause it", "field": None},
    )
    client = AgentClient(unix_agent.url)
    with pytest.raises(AgentNotFound, match="no route"):
        client.get("/v1/containers/nothing")
    with pytest.raises(AgentConflict, match="cannot pause it"):
        client.post("/v1/containers/web/pause")


def test_get_or_none(unix_agent):
    unix_agent.routes["GET", "/v1/containers/web"] = lambda h: (200, {"name": "web"})
    client = AgentClient(unix_agent.url)
    assert client.get_or_none("/v1/containers/web") == {"name": "web"}
    assert client.get_or_none("/v1/containers/other") is None


def test_credentials_refused_says_what_to_check(unix_agent):
    unix_agent.routes["GET", "/v1/info"] = lambda h: (
        403,
        {"detail": "token not accepted", "field": None},
    )
    with pytest.raises(AgentError) as info:
        AgentClient(unix_agent.url, token="wrong").get("/v1/info")
    message = str(info.value)
    assert "refused GET /v1/info (403): token not accepted" in message
    assert "agent_token" in message


def test_5xx_names_the_request(unix_agent):
    unix_agent.routes["GET", "/v1/info"] = lambda h: (
        500,
        {"detail": "the kernel refused a mount", "field": None},
    )
    with pytest.raises(AgentError) as info:
        AgentClient(unix_agent.url).get("/v1/info")
    assert (
        str(info.value)
        == "agent at %s failed GET /v1/info (500): the kernel refused a mount" % unix_agent.url
    )


def test_non_json_answer(unix_agent):
    unix_agent.routes["GET", "/v1/info"] = lambda h: (200, b"<html>")
    with pytest.raises(AgentError, match="not JSON"):
        AgentClient(unix_agent.url).get("/v1/info")


def test_empty_answer_is_none(unix_agent):
    unix_agent.routes["DELETE", "/v1/x"] = lambda h: (200, b"")
    assert AgentClient(unix_agent.url).delete("/v1/x").body is None


def test_missing_socket_is_not_reachable(tmp_path):
    url = "unix://%s" % (tmp_path / "nothing.sock")
    with pytest.raises(AgentUnreachable) as info:
        AgentClient(url).get("/v1/info")
    message = str(info.value)
    assert message.startswith("agent not reachable at %s: " % url)
    assert "No such file or directory" in message
    assert "gantry agent serve --socket %s" % (tmp_path / "nothing.sock") in message


def test_socket_nobody_listens_on(tmp_path):
    path = str(tmp_path / "dead.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.close()  # the file stays, nobody accepts
    with pytest.raises(AgentUnreachable, match="Connection refused"):
        AgentClient("unix://" + path).get("/v1/info")


def test_slow_agent_times_out(unix_agent):
    release = threading.Event()

    def slow(handler):
        release.wait(10)
        return 200, {}

    unix_agent.routes["GET", "/v1/info"] = slow
    try:
        with pytest.raises(AgentUnreachable) as info:
            AgentClient(unix_agent.url, timeout=1).get("/v1/info")
    finally:
        release.set()
    assert "did not answer" in str(info.value)
    assert "within 1 seconds" in str(info.value)


# --- operations ----------------------------------------------------------------------------


def operation_route(states):
    """A wait route answering the given operation documents one after the other."""
    answers = list(states)

    def route(handler):
        return 200, answers.pop(0) if len(answers) > 1 else answers[0]

    return route


def test_wait_operation_until_done(unix_agent):
    unix_agent.routes["GET", "/v1/operations/op1/wait"] = operation_route(
        [
            {"id": "op1", "description": "stop", "status": "running"},
            {"id": "op1", "description": "stop", "status": "success", "result": {"changed": True}},
        ]
    )
    done = AgentClient(unix_agent.url, timeout=5).wait_operation(
        {"id": "op1", "status": "running"}, timeout=30, poll=0
    )
    assert done["result"] == {"changed": True}
    assert len(unix_agent.seen) == 2
    assert all(
        seen["path"].startswith("/v1/operations/op1/wait?timeout=") for seen in unix_agent.seen
    )


def test_finished_operation_needs_no_request(unix_agent):
    done = AgentClient(unix_agent.url).wait_operation({"id": "op1", "status": "success"}, timeout=1)
    assert done["status"] == "success"
    assert unix_agent.seen == []


def test_failed_operation_is_the_synchronous_error(unix_agent):
    error = {
        "detail": "spec.resources.memory: must be at least 6291456 bytes (6m), got 1024",
        "field": "spec.resources.memory",
        "status_code": 422,
    }
    unix_agent.routes["GET", "/v1/operations/op2/wait"] = operation_route(
        [{"id": "op2", "description": "converge", "status": "failure", "error": error}]
    )
    with pytest.raises(OperationFailed) as info:
        AgentClient(unix_agent.url).wait_operation("op2", timeout=5, poll=0)
    assert str(info.value) == error["detail"]
    assert info.value.field == "spec.resources.memory"
    assert info.value.status == 422


def test_cancelled_operation(unix_agent):
    unix_agent.routes["GET", "/v1/operations/op4/wait"] = operation_route(
        [{"id": "op4", "description": "wait", "status": "cancelled", "error": None}]
    )
    with pytest.raises(OperationFailed, match=r"operation op4 \(wait\) cancelled: no reason"):
        AgentClient(unix_agent.url).wait_operation("op4", timeout=5, poll=0)


def test_operation_still_running_times_out(unix_agent):
    unix_agent.routes["GET", "/v1/operations/op3/wait"] = operation_route(
        [{"id": "op3", "description": "pull", "status": "running"}]
    )
    with pytest.raises(OperationTimeout, match="still running after 1 seconds"):
        AgentClient(unix_agent.url, timeout=2).wait_operation("op3", timeout=1, poll=0.2)


# --- TLS -----------------------------------------------------------------------------------


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1, and a client certificate."""
    directory = tmp_path_factory.mktemp("pki")
    cwd = str(directory)
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=cwd,
    )
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=%s" % name,
            "-keyout",
            "%s.key" % name,
            "-out",
            "%s.csr" % name,
            cwd=cwd,
        )
        openssl(
            "x509",
            "-req",
            "-in",
            "%s.csr" % name,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "%s.pem" % name,
            cwd=cwd,
        )
    return directory


@pytest.fixture
def tls_agent(pki):
    server = TCPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    context.load_verify_locations(str(pki / "ca.pem"))
    context.verify_mode = ssl.CERT_REQUIRED
    server.socket = context.wrap_socket(server.socket, server_side=True)
    serve(server)
    server.routes["GET", "/v1/info"] = lambda h: (200, {"version": "0.1.0"})
    server.url = "https://127.0.0.1:%d" % server.server_address[1]
    yield server
    server.shutdown()
    server.server_close()


def test_tls_with_ca_and_client_certificate(tls_agent, pki):
    client = AgentClient(
        tls_agent.url,
        ca_path=str(pki / "ca.pem"),
        client_cert=str(pki / "client.pem"),
        client_key=str(pki / "client.key"),
        timeout=5,
    )
    assert client.get("/v1/info").body == {"version": "0.1.0"}


def test_tls_unknown_ca_is_refused(tls_agent, pki):
    client = AgentClient(
        tls_agent.url,
        client_cert=str(pki / "client.pem"),
        client_key=str(pki / "client.key"),
        timeout=5,
    )
    with pytest.raises(AgentUnreachable) as info:
        client.get("/v1/info")
    message = str(info.value)
    assert message.startswith("TLS with agent at %s failed: " % tls_agent.url)
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert "ca_path" in message


def test_tls_without_validation_still_needs_the_client_certificate(tls_agent, pki):
    ok = AgentClient(
        tls_agent.url,
        validate_certs=False,
        client_cert=str(pki / "client.pem"),
        client_key=str(pki / "client.key"),
        timeout=5,
    )
    assert ok.get("/v1/info").status == 200
    refused = AgentClient(tls_agent.url, ca_path=str(pki / "ca.pem"), timeout=5)
    with pytest.raises(AgentUnreachable) as info:
        refused.get("/v1/info")
    # The server ends the handshake: no HTTP answer at all.
    assert str(info.value).startswith(("TLS with agent at", "agent not reachable at"))


def test_tls_token_is_sent(tls_agent, pki):
    client = AgentClient(
        tls_agent.url,
        token="t0ken",
        ca_path=str(pki / "ca.pem"),
        client_cert=str(pki / "client.pem"),
        client_key=str(pki / "client.key"),
        timeout=5,
    )
    client.get("/v1/info")
    assert tls_agent.seen[-1]["headers"]["Authorization"] == "Bearer t0ken"
