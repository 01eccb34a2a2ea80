"""Request bodies at the HTTP edge. Strict: a wrong type is refused, never coerced, and an
unknown field is an error naming it. The container spec is the engine's own input model
(:class:`gantry.engine.spec.ContainerSpecInput`), so OpenAPI shows every field of it and
the edge refuses what the engine's normaliser would (see docs/api.md, "The container
spec")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gantry.engine.spec import ContainerSpecInput

__all__ = [
    "CreateRequest",
    "ExecRequest",
    "KillRequest",
    "PutRequest",
    "RestartRequest",
    "StopRequest",
    "WaitRequest",
]

_SPEC_DOC = "The container spec: see docs/api.md. Exactly one of image and rootfs."


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


_PULL_DOC = "missing (pull when not in the store), always, or never (docs/api.md)"


class PutRequest(_Body):
    state: Literal["present", "running", "stopped"] = "running"
    dry_run: bool = False
    pull: Literal["missing", "always", "never"] = Field(default="missing", description=_PULL_DOC)
    spec: ContainerSpecInput = Field(description=_SPEC_DOC)


class CreateRequest(_Body):
    name: str
    spec: ContainerSpecInput = Field(description=_SPEC_DOC)
    start: bool = False
    pull: Literal["missing", "always", "never"] = Field(default="missing", description=_PULL_DOC)


class StopRequest(_Body):
    signal: str | int | None = None
    timeout: float | int | None = Field(default=None, ge=0)


class RestartRequest(_Body):
    timeout: float | int | None = Field(default=None, ge=0)


class KillRequest(_Body):
    signal: str | int = "SIGKILL"
    all: bool = False


class WaitRequest(_Body):
    timeout: float | int | None = Field(default=None, ge=0)


class ExecRequest(_Body):
    command: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    stdin: str = ""
    timeout: float | int | None = Field(default=None, gt=0)
    encoding: Literal["utf-8", "base64"] = "utf-8"
