# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one client gantry.fleet's modules use to talk to a Gantry agent.

Private to the collection (the leading underscore): modules import it, users do not.

It speaks HTTP over the agent's unix socket (``unix:///run/gantry/agent.sock``, the default)
or HTTPS with a CA bundle, a client certificate and/or a bearer token, and it uses nothing
but ansible-core's own URL helpers (``ansible.module_utils.urls.Request``), so a managed host
needs Python and nothing else.

Every failure becomes an ``AgentError`` whose message a person can act on: the agent is not
reachable at the URL (and why), it did not answer in time, the TLS handshake failed, the
credentials were refused, or the agent's own 4xx message (which names the field). Modules
fail with that message as it is.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import socket
import ssl
import time
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode, urlsplit

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.urls import Request

DEFAULT_AGENT_URL = "unix:///run/gantry/agent.sock"
DEFAULT_TIMEOUT = 60
CHUNK_SIZE = 1 << 20

# The options every module that talks to the agent takes (documented once, in the
# gantry.fleet.agent_options doc fragment). Each falls back to an environment variable.
AGENT_ARGUMENT_SPEC = dict(
    agent_url=dict(
        type="str",
        default=DEFAULT_AGENT_URL,
        fallback=(env_fallback, ["GANTRY_AGENT_URL", "GANTRY_URL"]),
    ),
    agent_token=dict(
        type="str",
        no_log=True,
        fallback=(env_fallback, ["GANTRY_AGENT_TOKEN", "GANTRY_TOKEN"]),
    ),
    ca_path=dict(type="path", fallback=(env_fallback, ["GANTRY_AGENT_CA_PATH"])),
    client_cert=dict(type="path", fallback=(env_fallback, ["GANTRY_AGENT_CLIENT_CERT"])),
    client_key=dict(type="path", fallback=(env_fallback, ["GANTRY_AGENT_CLIENT_KEY"])),
    validate_certs=dict(
        type="bool",
        default=True,
        fallback=(env_fallback, ["GANTRY_AGENT_VALIDATE_CERTS"]),
    ),
    timeout=dict(
        type="int",
        default=DEFAULT_TIMEOUT,
        fallback=(env_fallback, ["GANTRY_AGENT_TIMEOUT"]),
    ),
)

AGENT_OPTION_NAMES = tuple(AGENT_ARGUMENT_SPEC)


def agent_argument_spec(**module_options):
    """The shared agent options merged with a module's own options (which win on a clash)."""
    spec = dict((name, dict(option)) for name, option in AGENT_ARGUMENT_SPEC.items())
    spec.update(module_options)
    return spec


# client_key without client_cert means nothing; the reverse is fine (key inside the cert file).
AGENT_REQUIRED_BY = dict(client_key=("client_cert",))


class AgentError(Exception):
    """Anything that went wrong talking to the agent, with a message for a person.

    ``status`` is the HTTP status when the agent answered (else ``None``); ``body`` the
    decoded error document it sent; ``field`` the option the agent blamed, when it said.
    """

    def __init__(self, message, status=None, body=None, field=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body
        self.field = field

    def __str__(self):
        return self.message


class AgentUnreachable(AgentError):
    """No answer at all: nothing listens, the socket is missing, DNS, TLS or a timeout."""


class AgentNotFound(AgentError):
    """The agent answered 404: the object (or, on an older agent, the route) does not exist."""


class AgentConflict(AgentError):
    """The agent answered 409: the request conflicts with the object's current state."""


class OperationFailed(AgentError):
    """A long-running operation finished, but not successfully."""


class OperationTimeout(AgentError):
    """A long-running operation was still running when the wait ran out."""


class AgentResponse:
    """One answer: status, headers (lower-case names) and the decoded JSON body (or None)."""

    def __init__(self, status, headers, body, raw):
        self.status = status
        self.headers = headers
        self.body = body
        self.raw = raw

    def __repr__(self):
        return "AgentResponse(%d, %r)" % (self.status, self.body)


def parse_agent_url(url):
    """Split an agent URL into (base URL for requests, unix socket path or None).

    ``unix:///path/to.sock`` (or a bare absolute path) talks HTTP over that socket;
    ``https://host[:port]`` talks HTTPS. Plain ``http://`` is refused: the agent serves TCP
    only with TLS and client authentication.
    """
    if not isinstance(url, str) or not url.strip():
        raise AgentError("agent_url: must not be empty; for example %s" % DEFAULT_AGENT_URL)
    url = url.strip()
    if url.startswith("/"):
        return "http://localhost", url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "unix":
        # unix:///run/gantry/agent.sock -> netloc '' and path '/run/gantry/agent.sock'.
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not path.startswith("/"):
            raise AgentError(
                "agent_url: %r names no absolute socket path; write unix:///path/to/agent.sock"
                % url
            )
        return "http://localhost", path
    if scheme == "https":
        if not parts.hostname:
            raise AgentError("agent_url: %r names no host; write https://HOST:PORT" % url)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise AgentError(
                "agent_url: %r has a path or query; write only https://HOST:PORT" % url
            )
        return "https://%s" % parts.netloc, None
    if scheme == "http":
        raise AgentError(
            "agent_url: %r is plain HTTP; the Gantry agent serves TCP only over TLS, use "
            "https://%s (or the local socket %s)" % (url, parts.netloc, DEFAULT_AGENT_URL)
        )
    raise AgentError(
        "agent_url: %r has an unknown scheme %r; use unix:///path/to/agent.sock or "
        "https://HOST:PORT" % (url, parts.scheme)
    )


def quote_path(segment):
    """One path segment (a container or image name) quoted for a URL."""
    return quote(str(segment), safe="")


def error_details(body):
    """(message, field) from an agent error document, whatever its shape.

    The agent answers ``{"detail": "..."}`` or ``{"detail": {"message": ..., "field": ...}}``
    for its own errors, and FastAPI's ``{"detail": [{"loc": [...], "msg": ...}, ...]}`` for
    request validation; ``{"error": ...}``/``{"message": ...}`` are read too.
    """
    if body is None:
        return None, None
    if isinstance(body, str):
        return body.strip() or None, None
    if isinstance(body, list):
        return _validation_list(body)
    if not isinstance(body, dict):
        return str(body), None
    for key in ("detail", "error", "message", "msg"):
        if key not in body:
            continue
        value = body[key]
        if isinstance(value, str):
            field = body.get("field")
            return value, field if isinstance(field, str) else None
        if isinstance(value, list):
            return _validation_list(value)
        if isinstance(value, dict):
            return error_details(value)
    return json.dumps(body, sort_keys=True), None


def _validation_list(items):
    """FastAPI/pydantic validation errors as 'field: message; field: message'."""
    messages = []
    fields = []
    for item in items:
        if not isinstance(item, dict):
            messages.append(str(item))
            continue
        location = [
            str(part) for part in item.get("loc", []) if part not in ("body", "query", "path")
        ]
        field = ".".join(location)
        message = str(item.get("msg", item.get("message", item)))
        if field:
            fields.append(field)
            messages.append("%s: %s" % (field, message))
        else:
            messages.append(message)
    return "; ".join(messages) or None, fields[0] if fields else None


class AgentClient:
    """Requests to one agent. Cheap to build; holds no connection between requests."""

    def __init__(
        self,
        url=DEFAULT_AGENT_URL,
        token=None,
        ca_path=None,
        client_cert=None,
        client_key=None,
        validate_certs=True,
        timeout=DEFAULT_TIMEOUT,
        user_agent="gantry.fleet",
    ):
        if timeout is None or timeout <= 0:
            raise AgentError("timeout: must be a positive number of seconds, got %r" % (timeout,))
        self.url = url
        self.base_url, self.unix_socket = parse_agent_url(url)
        if self.unix_socket is None:
            for option, value in (
                ("ca_path", ca_path),
                ("client_cert", client_cert),
                ("client_key", client_key),
            ):
                if value is not None and not _readable(value):
                    raise AgentError("%s: cannot read %s" % (option, value))
        self.token = token
        self.timeout = timeout
        self._request = Request(
            headers={"Accept": "application/json"},
            use_proxy=False,
            timeout=timeout,
            validate_certs=validate_certs,
            http_agent=user_agent,
            follow_redirects="none",
            client_cert=client_cert,
            client_key=client_key,
            unix_socket=self.unix_socket,
            ca_path=ca_path,
        )

    # -- one request ------------------------------------------------------------------------

    def request(
        self,
        method,
        path,
        body=None,
        query=None,
        timeout=None,
        ok=None,
        upload=None,
        content_type=None,
        sink=None,
    ):
        """Send one request; return an AgentResponse for a 2xx, raise AgentError otherwise.

        ``path`` starts with ``/``; ``query`` is a dict or a list of pairs (for repeated
        keys; None values are left out, booleans are sent as ``true``/``false``); ``body``
        is sent as JSON. ``ok`` lists further statuses to return instead of raising (for
        example ``(404,)``).

        ``upload`` is a file (opened for reading in binary) sent as the raw request body, as
        ``content_type``, streamed rather than read into memory (an image archive). ``sink``
        is a file (opened for writing in binary) the body of a 2xx answer is streamed into
        (an exported image); the answer's ``body`` is then None.
        """
        url = self.base_url + path
        if query:
            items = query.items() if isinstance(query, dict) else query
            pairs = [(key, _query_value(value)) for key, value in items if value is not None]
            if pairs:
                url += "?" + urlencode(pairs)
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif upload is not None:
            data = upload
            headers["Content-Type"] = content_type or "application/octet-stream"
            headers["Content-Length"] = str(os.fstat(upload.fileno()).st_size - upload.tell())
        if self.token:
            headers["Authorization"] = "Bearer %s" % self.token
        where = "%s %s" % (method, path)
        wait = timeout if timeout is not None else self.timeout
        try:
            response = self._request.open(method, url, data=data, headers=headers, timeout=wait)
            status = response.getcode()
            if sink is not None and 200 <= status < 300:
                response_headers = dict((k.lower(), v) for k, v in response.headers.items())
                while True:
                    chunk = response.read(CHUNK_SIZE)
                    if not chunk:
                        break
                    sink.write(chunk)
                return AgentResponse(status, response_headers, None, b"")
            raw = response.read()
            response_headers = dict((k.lower(), v) for k, v in response.headers.items())
        except HTTPError as error:
            raw = _read_error_body(error)
            status = error.code
            response_headers = dict((k.lower(), v) for k, v in (error.headers or {}).items())
            if ok and status in ok:
                return AgentResponse(status, response_headers, _decode_lenient(raw), raw)
            raise self._http_error(where, status, raw) from None
        except (socket.timeout, TimeoutError) as error:
            raise AgentUnreachable(
                "agent at %s did not answer %s within %s seconds (%s); raise timeout if it is "
                "busy" % (self.url, where, wait, error or "timed out")
            ) from None
        except URLError as error:
            raise self._unreachable(error.reason) from None
        except (ssl.SSLError, ssl.CertificateError, OSError, ValueError) as error:
            raise self._unreachable(error) from None
        if status >= 400 and not (ok and status in ok):
            raise self._http_error(where, status, raw)
        try:
            decoded = _decode(raw)
        except ValueError:
            raise AgentError(
                "agent at %s answered %s with something that is not JSON: %r"
                % (self.url, where, raw[:200])
            ) from None
        return AgentResponse(status, response_headers, decoded, raw)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def put(self, path, body=None, **kwargs):
        return self.request("PUT", path, body=body, **kwargs)

    def post(self, path, body=None, **kwargs):
        return self.request("POST", path, body=body, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def get_or_none(self, path, **kwargs):
        """The decoded body of a GET, or None when the agent answers 404."""
        response = self.request("GET", path, ok=(404,), **kwargs)
        return None if response.status == 404 else response.body

    # -- long-running operations ------------------------------------------------------------

    def wait_operation(self, operation, timeout, poll=0.5):
        """Wait for a long-running operation; return its final document.

        ``operation`` is the document the agent answered with 202 (or its id). The wait asks
        the agent's own wait endpoint (which holds the request until the operation ends), in
        slices no longer than the client timeout, so a long stop or pull never holds one
        HTTP request open for minutes. When the operation failed, raises OperationFailed
        carrying the error the synchronous request would have answered (its message, field
        and status); OperationTimeout when it is still running after ``timeout`` seconds.
        """
        op_id = operation.get("id") if isinstance(operation, dict) else operation
        if not op_id:
            raise AgentError("agent answered an operation without an id: %r" % (operation,))
        current = operation if isinstance(operation, dict) else {"id": op_id}
        deadline = time.monotonic() + timeout
        while not _operation_done(current):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OperationTimeout(
                    "operation %s (%s) still %s after %s seconds"
                    % (op_id, _operation_name(current), current.get("status", "running"), timeout),
                    body=current,
                )
            slice_seconds = max(1, min(int(remaining) or 1, max(1, int(self.timeout) - 1), 30))
            asked = time.monotonic()
            current = self.get(
                "/v1/operations/%s/wait" % quote_path(op_id),
                query={"timeout": slice_seconds},
                timeout=slice_seconds + self.timeout,
            ).body
            if not isinstance(current, dict):
                raise AgentError("agent answered operation %s with %r" % (op_id, current))
            # An agent that answers at once instead of holding the wait gets polled gently.
            if not _operation_done(current) and time.monotonic() - asked < poll:
                time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        if current.get("status") in ("success", "succeeded", "done", "completed"):
            return current
        error = current.get("error")
        if isinstance(error, dict) and error.get("detail"):
            message, field = error_details(error)
            status = error.get("status_code")
            raise OperationFailed(
                message,
                status=status if isinstance(status, int) else None,
                body=current,
                field=field,
            )
        message = error_details(error)[0] if error else None
        raise OperationFailed(
            "operation %s (%s) %s: %s"
            % (
                op_id,
                _operation_name(current),
                current.get("status"),
                message or "no reason given",
            ),
            body=current,
        )

    # -- errors -----------------------------------------------------------------------------

    def _http_error(self, where, status, raw):
        body = _decode_lenient(raw)
        message, field = error_details(body)
        message = message or "no message"
        if status in (401, 403):
            return AgentError(
                "agent at %s refused %s (%d): %s; check agent_token or client_cert/client_key"
                % (self.url, where, status, message),
                status=status,
                body=body,
                field=field,
            )
        if status == 404:
            return AgentNotFound(message, status=status, body=body, field=field)
        if status == 409:
            return AgentConflict(message, status=status, body=body, field=field)
        if 400 <= status < 500:
            # The agent's own message names the field; pass it on as it is.
            return AgentError(message, status=status, body=body, field=field)
        return AgentError(
            "agent at %s failed %s (%d): %s" % (self.url, where, status, message),
            status=status,
            body=body,
            field=field,
        )

    def _unreachable(self, reason):
        text = str(reason)
        if (
            isinstance(reason, (ssl.SSLError, ssl.CertificateError))
            or "CERTIFICATE" in text.upper()
        ):
            return AgentUnreachable(
                "TLS with agent at %s failed: %s; check ca_path, client_cert, client_key and "
                "validate_certs" % (self.url, text)
            )
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return AgentUnreachable(
                "agent at %s did not answer within %s seconds" % (self.url, self.timeout)
            )
        hint = ""
        if self.unix_socket:
            hint = "; is the agent running (gantry agent serve --socket %s)?" % self.unix_socket
        return AgentUnreachable("agent not reachable at %s: %s%s" % (self.url, text, hint))


def _operation_name(operation):
    return operation.get("description") or operation.get("kind") or "?"


def _operation_done(operation):
    status = operation.get("status")
    return status is not None and status not in ("pending", "running", "queued", "started")


def _query_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _decode(raw):
    if not raw:
        return None
    return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)


def _decode_lenient(raw):
    """JSON when it is JSON, else the text (error pages of proxies are HTML)."""
    try:
        return _decode(raw)
    except ValueError:
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _read_error_body(error):
    try:
        return error.read() or b""
    except Exception:  # pylint: disable=broad-except
        # A response whose body was already consumed or whose connection dropped.
        return b""


def _readable(path):
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def client_from_params(params):
    """An AgentClient from a module's validated parameters (the shared options)."""
    return AgentClient(
        url=params["agent_url"],
        token=params.get("agent_token"),
        ca_path=params.get("ca_path"),
        client_cert=params.get("client_cert"),
        client_key=params.get("client_key"),
        validate_certs=params.get("validate_certs", True),
        timeout=params.get("timeout") or DEFAULT_TIMEOUT,
    )


def client_from_module(module):
    """An AgentClient for an AnsibleModule; bad connection options fail the module."""
    try:
        return client_from_params(module.params)
    except AgentError as error:
        module.fail_json(msg=str(error))
    return None  # not reached: fail_json exits


def fail_with(module, error, **result):
    """Fail the module with an AgentError's message, keeping what the agent said."""
    extra = dict(result)
    if error.status is not None:
        extra["status"] = error.status
    if error.field:
        extra["field"] = error.field
    module.fail_json(msg=str(error), **extra)
