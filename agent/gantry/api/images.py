"""The image routes of the agent (docs/api.md, "Images"): list, inspect, pull, push, load,
import, save, tag, remove, prune, and a container's commit and export.

Request bodies are strict like :mod:`gantry.api.schemas`. Archives travel as streams: an
upload is spooled to a file under the agent's ``tmp/`` as it arrives (never held in
memory), a download is read from a file or a pipe in chunks.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Annotated, Any, Final, Literal

import anyio
from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from gantry.engine import Engine, Invalid
from gantry.engine import images as engine_images

__all__ = ["MAX_IMAGE_UPLOAD", "images_router"]

_log = logging.getLogger(__name__)

MAX_IMAGE_UPLOAD: Final = 64 << 30
"""The largest image archive ``load`` and ``import`` accept (bytes)."""
_CHUNK: Final = 1 << 20


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PullRequest(_Body):
    reference: str = Field(min_length=1)
    platform: str | None = None
    username: str | None = None
    password: str | None = None
    dry_run: bool = False


class PushRequest(_Body):
    reference: str = Field(min_length=1)
    username: str | None = None
    password: str | None = None


class SaveRequest(_Body):
    references: list[str] = Field(min_length=1)
    format: Literal["docker", "oci"] = "docker"


class TagRequest(_Body):
    source: str = Field(min_length=1)
    target: str = Field(min_length=1)


class PruneRequest(_Body):
    all: bool = False


class CommitRequest(_Body):
    reference: str | None = None
    message: str | None = None
    author: str | None = None
    pause: bool = True


AsyncFlag = Annotated[
    bool,
    Query(alias="async", description="answer 202 at once with the operation's URL (docs/api.md)"),
]


def _operation(
    engine: Engine, run_async: bool, description: str, resource: str, work: Callable[[], Any]
) -> Any:
    if not run_async:
        return work()
    operation = engine.operations.submit(description, [resource], lambda _cancel: work())
    return JSONResponse(
        operation.as_json(), status_code=202, headers={"Location": f"/v1/operations/{operation.id}"}
    )


def _file_chunks(handle: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := handle.read(_CHUNK):
            yield chunk
    finally:
        handle.close()


def _piped(produce: Callable[[IO[bytes]], None]) -> Iterator[bytes]:
    """Chunks of what ``produce`` writes, made in a thread (a tar of a whole rootfs is
    streamed as it is made, neither in memory nor spooled to disk)."""
    read_fd, write_fd = os.pipe()

    def run() -> None:
        try:
            with os.fdopen(write_fd, "wb") as out:
                produce(out)
        except BrokenPipeError:
            pass  # the client went away
        except Exception:
            _log.exception("writing a tar stream")

    thread = threading.Thread(target=run, name="tar-stream", daemon=True)
    thread.start()
    with os.fdopen(read_fd, "rb") as source:
        while chunk := source.read(_CHUNK):
            yield chunk
    thread.join()


async def _spool(engine: Engine, request: Request) -> Path:
    """The request body in a file under the agent's tmp/ (the caller removes it)."""
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=".tar", dir=engine.tmp)
    path = Path(name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_IMAGE_UPLOAD:
                    raise Invalid(
                        f"body: the archive is larger than {MAX_IMAGE_UPLOAD} bytes", "body"
                    )
                await anyio.to_thread.run_sync(out.write, chunk)
        if size == 0:
            raise Invalid("body: empty: send the archive as the request body", "body")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def images_router(engine: Engine) -> APIRouter:
    router = APIRouter(tags=["images"])

    @router.get("/v1/images")
    def list_images(
        reference: Annotated[list[str] | None, Query()] = None,
        dangling: bool | None = None,
    ) -> list[dict[str, Any]]:
        return engine_images.list_images(engine, reference, dangling)

    @router.post("/v1/images/pull")
    def pull_image(body: PullRequest, run_async: AsyncFlag = False) -> Any:
        return _operation(
            engine,
            run_async,
            f"pull {body.reference}",
            f"/v1/images/{body.reference}",
            lambda: engine_images.pull_json(engine, body.model_dump()),
        )

    @router.post("/v1/images/push")
    def push_image(body: PushRequest, run_async: AsyncFlag = False) -> Any:
        return _operation(
            engine,
            run_async,
            f"push {body.reference}",
            f"/v1/images/{body.reference}",
            lambda: engine_images.push(engine, body.reference, body.username, body.password),
        )

    @router.post("/v1/images/load")
    async def load_image(
        request: Request, reference: str | None = None, run_async: AsyncFlag = False
    ) -> Any:
        path = await _spool(engine, request)

        def work() -> Any:
            try:
                return engine_images.load(engine, path, reference)
            finally:
                path.unlink(missing_ok=True)

        if run_async:
            return _operation(engine, True, "load", "/v1/images", work)
        return await anyio.to_thread.run_sync(work)

    @router.post("/v1/images/import")
    async def import_image(
        request: Request,
        reference: Annotated[str, Query(min_length=1)],
        run_async: AsyncFlag = False,
    ) -> Any:
        path = await _spool(engine, request)

        def work() -> Any:
            try:
                return engine_images.import_rootfs(engine, path, reference)
            finally:
                path.unlink(missing_ok=True)

        if run_async:
            return _operation(engine, True, f"import {reference}", f"/v1/images/{reference}", work)
        return await anyio.to_thread.run_sync(work)

    @router.post("/v1/images/save", response_class=StreamingResponse)
    def save_images(body: SaveRequest) -> StreamingResponse:
        handle = engine_images.save(engine, body.references, body.format)
        return StreamingResponse(_file_chunks(handle), media_type="application/x-tar")

    @router.post("/v1/images/tag")
    def tag_image(body: TagRequest) -> dict[str, Any]:
        return engine_images.tag(engine, body.source, body.target)

    @router.post("/v1/images/prune")
    def prune_images(body: Annotated[PruneRequest | None, Body()] = None) -> dict[str, Any]:
        return engine_images.prune(engine, all_images=(body or PruneRequest()).all)

    @router.get("/v1/images/{ref:path}")
    def inspect_image(ref: str) -> dict[str, Any]:
        return engine_images.inspect_image(engine, ref)

    @router.delete("/v1/images/{ref:path}")
    def remove_image(ref: str, force: bool = False) -> dict[str, Any]:
        return engine_images.remove(engine, ref, force=force)

    @router.post("/v1/containers/{name}/commit")
    def commit_container(
        name: str,
        body: Annotated[CommitRequest | None, Body()] = None,
        run_async: AsyncFlag = False,
    ) -> Any:
        request = body or CommitRequest()
        return _operation(
            engine,
            run_async,
            "commit",
            f"/v1/containers/{name}",
            lambda: engine_images.commit(
                engine,
                name,
                reference=request.reference,
                message=request.message,
                author=request.author,
                pause=request.pause,
            ),
        )

    @router.get("/v1/containers/{name}/export", response_class=StreamingResponse)
    def export_container(name: str) -> StreamingResponse:
        root = engine_images.export_root(engine, name)
        return StreamingResponse(
            _piped(lambda out: engine_images.write_tree(root, out)),
            media_type="application/x-tar",
        )

    return router
