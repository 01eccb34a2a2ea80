"""The network routes: ``/v1/networks`` (list, inspect, create, converge, remove).

Bodies are strict pydantic models (an unknown field or a wrong type is a 422 naming it);
the engine's :class:`~gantry.engine.networking.Networking` does the rest. See docs/api.md,
"Networks".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from gantry.engine import Engine

__all__ = ["NetworkCreate", "NetworkPut", "NetworkSpecBody", "networks_router"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NetworkSpecBody(_Body):
    driver: Literal["bridge", "macvlan", "ipvlan"] | None = None
    subnet: Annotated[str | None, Field(description="null: a free /24 chosen by the agent")] = None
    gateway: str | None = None
    ip_range: str | None = None
    internal: bool | None = None
    parent: Annotated[str | None, Field(description="host interface of macvlan/ipvlan")] = None
    labels: dict[str, str] | None = None


class NetworkCreate(NetworkSpecBody):
    name: str


class NetworkPut(_Body):
    spec: NetworkSpecBody | None = None
    dry_run: bool = False


def networks_router(engine: Engine) -> APIRouter:
    router = APIRouter(prefix="/v1/networks", tags=["networks"])

    @router.get("")
    def list_networks() -> list[dict[str, Any]]:
        return engine.net.list_networks()

    @router.get("/{name}")
    def inspect_network(name: str) -> dict[str, Any]:
        return engine.net.inspect_network(name)

    @router.post("", status_code=201)
    def create_network(body: NetworkCreate) -> dict[str, Any]:
        fields = body.model_dump(exclude={"name"})
        return engine.net.create_network(body.name, fields)

    @router.put("/{name}")
    def put_network(name: str, body: NetworkPut) -> dict[str, Any]:
        spec = body.spec.model_dump() if body.spec is not None else {}
        return engine.net.converge_network(name, spec, dry_run=body.dry_run)

    @router.delete("/{name}")
    def remove_network(name: str) -> dict[str, Any]:
        return engine.net.remove_network(name)

    return router
