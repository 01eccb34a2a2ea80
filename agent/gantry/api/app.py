"""The agent's FastAPI application: routes over the engine, errors in one shape.

Every error body is ``{"detail": ..., "field": ...}`` (docs/api.md, "Errors"). Routes that
block (the engine's verbs) are plain functions, which FastAPI runs in its thread pool, so
one slow stop never holds up the event loop or another container's request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gantry import __version__
from gantry.api import schemas
from gantry.api.images import images_router
from gantry.api.metrics import render_metrics
from gantry.api.networks import networks_router
from gantry.engine import Conflict, Engine, EngineError, Invalid, NotFound, Unavailable
from gantry.engine import files as container_files
from gantry.engine.info import host_info
from gantry.engine.logs import LogLine, format_time, parse_tail, parse_time, read_lines
from gantry.engine.sessions import Session
from gantry.engine.spec.fields import error_field, error_message
from gantry.images.errors import ImageError
from gantry.images.errors import NotFound as ImageNotFound

__all__ = ["MAX_UPLOAD", "create_app"]

_log = logging.getLogger(__name__)

MAX_UPLOAD = 1 << 30
"""The largest tar archive accepted by ``PUT …/archive`` (bytes)."""

_STATUS = {Invalid: 422, NotFound: 404, Conflict: 409, Unavailable: 404}


def _error(
    status: int, detail: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"detail": detail, "field": field}, status_code=status, headers=headers)


def _field_of(error: Any, body: Any) -> str:
    """The dotted field of one request validation error: body fields by their path in the
    body (``spec.resources.memory``), query parameters as ``query.NAME``, path parameters
    by their name (the engine's names: ``name``, ``ref``, ``operation``)."""
    loc = tuple(error.get("loc", ()))
    if loc and loc[0] == "body":
        return error_field({**error, "loc": loc[1:]}, body) or "body"
    if loc and loc[0] == "path":
        return error_field({**error, "loc": loc[1:]}, None) or "path"
    if loc and loc[0] in ("query", "header"):
        return error_field({**error, "loc": loc[1:]}, None, str(loc[0]))
    return error_field(error, None) or "body"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EngineError)
    async def engine_error(_request: Request, exc: EngineError) -> JSONResponse:
        return _error(_STATUS.get(type(exc), 409), exc.detail, exc.field)

    @app.exception_handler(ImageError)
    async def image_error(_request: Request, exc: ImageError) -> JSONResponse:
        # The image verbs map their errors to the engine's; this is the safety net.
        return _error(404 if isinstance(exc, ImageNotFound) else 422, str(exc), None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if not errors:
            return _error(422, "body: invalid request", "body")
        # An unknown field first, as a typo explains the errors that follow from it.
        first = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
        if first.get("type") == "json_invalid":
            return _error(400, "the body is not valid JSON", "body")
        body = getattr(exc, "body", None)
        field = _field_of(first, body)
        if field == "body" and first.get("type") in (
            "model_attributes_type",
            "dict_type",
            "model_type",
        ):
            return _error(400, "the body must be a JSON object", "body")
        return _error(422, f"{field}: {error_message(first)}", field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such route"
        return _error(exc.status_code, detail, None, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        _log.error("unexpected error", exc_info=exc)
        return _error(500, "internal error in the agent; its log has the details", None)


AsyncFlag = Annotated[
    bool,
    Query(alias="async", description="answer 202 at once with the operation's URL (docs/api.md)"),
]


def _maybe_async(
    engine: Engine,
    run_async: bool,
    description: str,
    name: str,
    work: Callable[[threading.Event], Any],
    *,
    may_cancel: bool = False,
) -> Any:
    """Do ``work`` now, or as an operation when the client asked for ``async``."""
    if not run_async:
        return work(threading.Event())
    operation = engine.operations.submit(
        description, [f"/v1/containers/{name}"], work, may_cancel=may_cancel
    )
    return JSONResponse(
        operation.as_json(), status_code=202, headers={"Location": f"/v1/operations/{operation.id}"}
    )


def _containers_router(engine: Engine) -> APIRouter:
    router = APIRouter(prefix="/v1/containers", tags=["containers"])

    @router.get("")
    def list_containers(
        status: Annotated[list[str] | None, Query()] = None,
        label: Annotated[list[str] | None, Query()] = None,
        name: str | None = None,
    ) -> list[dict[str, Any]]:
        return engine.list(statuses=status, labels=label, name=name)

    @router.post("", status_code=201)
    def create_container(body: schemas.CreateRequest, run_async: AsyncFlag = False) -> Any:
        def work(_cancel: threading.Event) -> Any:
            return engine.create(body.name, body.spec, start=body.start, pull=body.pull)

        return _maybe_async(engine, run_async, "create", body.name, work)

    @router.put("/{name}")
    def put_container(name: str, body: schemas.PutRequest, run_async: AsyncFlag = False) -> Any:
        def work(_cancel: threading.Event) -> Any:
            return engine.apply(name, body.spec, body.state, dry_run=body.dry_run, pull=body.pull)

        return _maybe_async(engine, run_async, f"converge to {body.state}", name, work)

    @router.get("/{name}")
    def inspect_container(name: str) -> dict[str, Any]:
        return engine.inspect(name)

    @router.delete("/{name}")
    def remove_container(
        name: str, force: bool = False, dry_run: bool = False, run_async: AsyncFlag = False
    ) -> Any:
        def work(_cancel: threading.Event) -> Any:
            return engine.remove(name, force=force, dry_run=dry_run)

        return _maybe_async(engine, run_async, "remove", name, work)

    @router.post("/{name}/start")
    def start_container(name: str) -> dict[str, Any]:
        return engine.start(name)

    @router.post("/{name}/stop")
    def stop_container(
        name: str,
        body: Annotated[schemas.StopRequest | None, Body()] = None,
        run_async: AsyncFlag = False,
    ) -> Any:
        stop = body or schemas.StopRequest()
        return _maybe_async(
            engine, run_async, "stop", name, lambda _c: engine.stop(name, stop.signal, stop.timeout)
        )

    @router.post("/{name}/restart")
    def restart_container(
        name: str,
        body: Annotated[schemas.RestartRequest | None, Body()] = None,
        run_async: AsyncFlag = False,
    ) -> Any:
        timeout = (body or schemas.RestartRequest()).timeout
        return _maybe_async(
            engine, run_async, "restart", name, lambda _c: engine.restart(name, timeout)
        )

    @router.post("/{name}/kill")
    def kill_container(
        name: str, body: Annotated[schemas.KillRequest | None, Body()] = None
    ) -> dict[str, Any]:
        body = body or schemas.KillRequest()
        return engine.kill(name, body.signal, body.all)

    @router.post("/{name}/pause")
    def pause_container(name: str) -> dict[str, Any]:
        return engine.pause(name)

    @router.post("/{name}/unpause")
    def unpause_container(name: str) -> dict[str, Any]:
        return engine.unpause(name)

    @router.post("/{name}/wait")
    def wait_container(
        name: str,
        body: Annotated[schemas.WaitRequest | None, Body()] = None,
        run_async: AsyncFlag = False,
    ) -> Any:
        timeout = (body or schemas.WaitRequest()).timeout
        return _maybe_async(
            engine,
            run_async,
            "wait",
            name,
            lambda cancel: engine.wait(name, timeout, cancelled=cancel),
            may_cancel=True,
        )

    @router.websocket("/{name}/exec/ws")
    async def exec_session(websocket: WebSocket, name: str) -> None:
        """Interactive exec: the first message is the request (as POST …/exec, plus
        ``tty``, ``width``, ``height``); see docs/api.md."""
        await websocket.accept()
        try:
            first = await websocket.receive_json()
            if not isinstance(first, dict):
                raise Invalid("body: the first message must be the exec request object", "body")
            session = await anyio.to_thread.run_sync(engine.start_session, name, first)
        except EngineError as exc:
            status = _STATUS.get(type(exc), 409)
            await websocket.send_json(
                {"type": "error", "detail": exc.detail, "field": exc.field, "status_code": status}
            )
            await websocket.close(code=1008)
            return
        except (ValueError, WebSocketDisconnect):
            with contextlib.suppress(Exception):
                await websocket.send_json(
                    {
                        "type": "error",
                        "detail": "the first message must be JSON",
                        "field": "body",
                        "status_code": 400,
                    }
                )
                await websocket.close(code=1008)
            return
        try:
            await _run_session(websocket, session)
        finally:
            await anyio.to_thread.run_sync(session.close)

    @router.get("/{name}/stats")
    def container_stats(name: str) -> dict[str, Any]:
        return engine.stats(name)

    @router.post("/{name}/exec")
    def exec_in_container(name: str, body: schemas.ExecRequest) -> dict[str, Any]:
        return engine.exec(name, body.model_dump())

    @router.get("/{name}/logs", response_class=PlainTextResponse)
    def container_logs(
        name: str,
        follow: bool = False,
        tail: str = "all",
        stdout: bool = True,
        stderr: bool = True,
        timestamps: bool = False,
        since: str | None = None,
        until: str | None = None,
        format: str = "text",
    ) -> Response:
        lines = parse_tail(tail)
        if not (stdout or stderr):
            raise Invalid("stdout: choose at least one of stdout and stderr", "query.stdout")
        if format not in ("text", "json"):
            raise Invalid(f"format: must be text or json, got {format!r}", "query.format")
        now = time.time_ns()
        bounds = {
            key: None if value is None else format_time(parse_time(value, key, now_ns=now))
            for key, value in (("since", since), ("until", until))
        }
        row, path = engine.log_path(name)
        found = read_lines(
            path,
            tail=lines,
            follow=follow,
            streams=tuple(key for key, on in (("stdout", stdout), ("stderr", stderr)) if on),
            since=bounds["since"],
            until=bounds["until"],
            running=lambda: engine.is_running(row.id),
            stopping=lambda: engine.closing,
        )
        if format == "json":
            return StreamingResponse(_json_lines(found), media_type="application/x-ndjson")
        return StreamingResponse(
            _text_lines(found, timestamps), media_type="text/plain; charset=utf-8"
        )

    @router.get("/{name}/archive")
    def get_archive(name: str, path: Annotated[str, Query(min_length=1)]) -> Response:
        rootfs = engine.inspect(name)["paths"]["rootfs"]
        spool = tempfile.TemporaryFile(dir=engine.tmp)  # noqa: SIM115 - the response closes it
        try:
            container_files.write_archive(rootfs, path, spool)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return StreamingResponse(_file_chunks(spool), media_type="application/x-tar")

    @router.put("/{name}/archive")
    async def put_archive(
        name: str, request: Request, path: Annotated[str, Query(min_length=1)]
    ) -> dict[str, Any]:
        rootfs = (await anyio.to_thread.run_sync(engine.inspect, name))["paths"]["rootfs"]
        spool = tempfile.TemporaryFile(dir=engine.tmp)  # noqa: SIM115 - closed below
        try:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD:
                    return _error(
                        413, f"body: the archive is larger than {MAX_UPLOAD} bytes", "body"
                    )  # type: ignore[return-value]
                spool.write(chunk)
            spool.seek(0)
            written = await anyio.to_thread.run_sync(
                container_files.extract_into, rootfs, path, spool
            )
        finally:
            spool.close()
        return {"changed": bool(written), "paths": written}

    return router


_STREAM_PREFIX = {"stdout": b"\x01", "stderr": b"\x02"}


class _Disconnected(Exception):
    """The websocket's client went away."""


async def _session_inbound(
    websocket: WebSocket, session: Session, queue: asyncio.Queue[Any]
) -> None:
    """Client to process: binary messages are stdin, text messages control messages."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise _Disconnected
            data = message.get("bytes")
            if data is not None:
                await _write_all(session, data)
                continue
            try:
                control = json.loads(message.get("text") or "")
                if not isinstance(control, dict):
                    raise Invalid("a control message must be a JSON object", "body")
                kind = control.get("type")
                if kind == "resize":
                    session.resize(control.get("width"), control.get("height"))
                elif kind == "signal":
                    session.signal(control.get("signal"))
                elif kind == "close_stdin":
                    session.close_stdin()
                else:
                    raise Invalid(
                        f"type: must be resize, signal or close_stdin, got {kind!r}", "type"
                    )
            except ValueError:
                await websocket.send_json(
                    {"type": "error", "detail": "a control message must be JSON", "field": "body"}
                )
            except EngineError as exc:
                await websocket.send_json(
                    {"type": "error", "detail": exc.detail, "field": exc.field}
                )
    except _Disconnected:
        queue.put_nowait(_Disconnected)
    except Exception:  # the session ends; its output side notices
        queue.put_nowait(_Disconnected)


async def _write_all(session: Session, data: bytes) -> None:
    view = memoryview(data)
    while view and session.stdin >= 0:
        try:
            view = view[os.write(session.stdin, view) :]
        except BlockingIOError:
            await asyncio.sleep(0.01)
        except OSError:
            return


async def _run_session(websocket: WebSocket, session: Session) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    open_fds: set[int] = set()

    def readable(fd: int, stream: str) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pty's other side is gone
            data = b""
        if data:
            queue.put_nowait((stream, data))
            return
        loop.remove_reader(fd)
        open_fds.discard(fd)
        if not open_fds:
            queue.put_nowait(None)

    for fd, stream in session.outputs:
        open_fds.add(fd)
        loop.add_reader(fd, readable, fd, stream)
    inbound = asyncio.create_task(_session_inbound(websocket, session, queue))
    try:
        while (item := await queue.get()) is not None:
            if item is _Disconnected:
                return
            stream, data = item
            await websocket.send_bytes(data if session.tty else _STREAM_PREFIX[stream] + data)
        rc = await anyio.to_thread.run_sync(session.wait)
        await websocket.send_json({"type": "exit", "rc": rc})
        await websocket.close()
    finally:
        inbound.cancel()
        for fd in open_fds:
            loop.remove_reader(fd)


def _file_chunks(handle: Any) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(65536):
            yield chunk


def _json_lines(found: Iterator[LogLine | None]) -> Iterator[bytes]:
    for line in found:
        if line is None:
            yield b""
            continue
        record = {
            "time": line.time,
            "stream": line.stream,
            "text": line.text.decode("utf-8", "replace"),
            "partial": not line.complete,
        }
        yield json.dumps(record).encode() + b"\n"


def _text_lines(found: Iterator[LogLine | None], timestamps: bool) -> Iterator[bytes]:
    for line in found:
        if line is None:
            yield b""
            continue
        prefix = line.time.encode() + b" " if timestamps else b""
        yield prefix + line.text + (b"\n" if line.complete else b"")


def _event_lines(
    engine: Engine, since: int, follow: bool, container: str | None
) -> Iterator[bytes]:
    for event in engine.events.stream(since, follow=follow, container=container):
        yield b"" if event is None else json.dumps(event).encode() + b"\n"


def create_app(engine: Engine | Callable[[], Engine], *, close_engine: bool = True) -> FastAPI:
    """The application; ``engine`` is an engine or a factory called at start-up (so the
    engine's recovery runs inside the server's lifespan)."""
    holder: dict[str, Engine] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        holder["engine"] = (
            engine if isinstance(engine, Engine) else await anyio.to_thread.run_sync(engine)
        )
        yield
        if close_engine:
            await anyio.to_thread.run_sync(holder["engine"].close)

    app = FastAPI(title="Gantry agent", version=__version__, lifespan=lifespan)
    _install_error_handlers(app)
    counters: dict[tuple[str, int], int] = {}

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        key = (request.method, response.status_code)
        counters[key] = counters.get(key, 0) + 1
        return response

    class _Proxy:
        """Routes are built before the engine exists; they reach it through this."""

        def __getattr__(self, name: str) -> Any:
            return getattr(holder["engine"], name)

    the_engine: Engine = _Proxy()  # type: ignore[assignment]

    @app.get("/livez", tags=["health"])
    def livez() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> Response:
        checks = {"database": "ok", "cgroups": "ok", "root": "ok"}
        try:
            the_engine.store.ping()
        except Exception as exc:  # any failure means not ready, whatever it is
            checks["database"] = str(exc)
        try:
            host_info(the_engine)
        except Exception as exc:
            checks["cgroups"] = str(exc)
        if not the_engine.tmp.is_dir():
            checks["root"] = f"{the_engine.tmp} is missing"
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ok" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics() -> Response:
        started = time.monotonic()
        text = render_metrics(the_engine, counters, started)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/info", tags=["info"])
    def info() -> dict[str, Any]:
        return host_info(the_engine)

    @app.get("/v1/events", tags=["events"])
    def events(
        since: Annotated[int, Query(ge=0)] = 0,
        follow: bool = False,
        container: str | None = None,
        type: str = "container",
    ) -> Response:
        if type != "container":
            raise Invalid(f"type: only 'container' events exist, got {type!r}", "query.type")
        return StreamingResponse(
            _event_lines(the_engine, since, follow, container), media_type="application/x-ndjson"
        )

    @app.get("/v1/operations", tags=["operations"])
    def list_operations() -> list[dict[str, Any]]:
        return the_engine.operations.list()

    @app.get("/v1/operations/{operation}", tags=["operations"])
    def get_operation(operation: str) -> dict[str, Any]:
        return the_engine.operations.get(operation).as_json()

    @app.get("/v1/operations/{operation}/wait", tags=["operations"])
    def wait_operation(
        operation: str, timeout: Annotated[float | None, Query(ge=0)] = None
    ) -> dict[str, Any]:
        return the_engine.operations.wait(operation, timeout)

    @app.delete("/v1/operations/{operation}", tags=["operations"])
    def cancel_operation(operation: str) -> dict[str, Any]:
        return the_engine.operations.cancel(operation)

    app.include_router(_containers_router(the_engine))
    app.include_router(images_router(the_engine))
    app.include_router(networks_router(the_engine))
    return app


def encode_output(data: bytes, encoding: str) -> str:
    return (
        base64.b64encode(data).decode() if encoding == "base64" else data.decode("utf-8", "replace")
    )
