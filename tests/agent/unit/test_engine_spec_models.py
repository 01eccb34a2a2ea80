"""The container spec's models: the OpenAPI schema lists every field with its type and
range, every accepted spelling appears there, the canonical form is itself an accepted
spelling, and refusals name the field with a bounded message."""

from __future__ import annotations

from typing import Any

import pytest
from gantry.api.app import create_app
from gantry.engine.errors import Invalid
from gantry.engine.spec import (
    SPEC_FIELDS,
    ContainerSpec,
    ContainerSpecInput,
    normalise,
    validate_name,
)
from gantry.engine.spec.fields import MAX_MESSAGE, MAX_SHOWN
from gantry.engine.spec.resources import RESOURCE_FIELDS


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return create_app(lambda: None).openapi()  # type: ignore[arg-type,return-value]


def _schema(openapi: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = openapi["components"]["schemas"][name]
    return found


def _types(node: dict[str, Any]) -> set[str]:
    """Every JSON type a (possibly nested anyOf/oneOf) schema node accepts."""
    out: set[str] = set()
    if "type" in node:
        out.add(node["type"])
    if "$ref" in node:
        out.add(node["$ref"].rsplit("/", 1)[-1])
    for key in ("anyOf", "oneOf"):
        for member in node.get(key, ()):
            out |= _types(member)
    return out


def test_openapi_lists_every_field_of_the_spec_with_its_types(openapi: dict[str, Any]) -> None:
    for route in ("PutRequest", "CreateRequest"):
        spec_ref = _schema(openapi, route)["properties"]["spec"]
        assert _types(spec_ref) == {"ContainerSpecInput"}
    spec = _schema(openapi, "ContainerSpecInput")
    assert spec["additionalProperties"] is False
    assert set(spec["properties"]) == set(SPEC_FIELDS)
    props = spec["properties"]
    assert _types(props["resources"]) == {"Resources"}
    assert _types(props["env"]) == {"object", "array", "null"}  # {"K": "V"} or ["K=V"]
    assert _types(props["stop_signal"]) == {"string", "integer", "null"}
    assert _types(props["restart_policy"]) == {"string", "OnFailure", "OtherRestart", "null"}
    mounts = props["mounts"]["items"]
    assert mounts["discriminator"]["propertyName"] == "type"
    assert set(mounts["discriminator"]["mapping"]) == {"bind", "tmpfs"}
    assert _types(props["ports"]["items"]) == {"string", "Port"}
    resources = _schema(openapi, "Resources")
    assert set(resources["properties"]) == set(RESOURCE_FIELDS)
    memory = resources["properties"]["memory"]
    assert _types(memory) == {"integer", "string", "null"}
    integer = next(m for m in memory["anyOf"][0]["anyOf"] if m["type"] == "integer")
    # FastAPI's OpenAPI models hold bounds as floats: 2**63 - 1 shows as 9.223372036854776e18.
    assert integer["minimum"] == 0 and integer["maximum"] == float((1 << 63) - 1)
    assert "pattern" in next(m for m in memory["anyOf"][0]["anyOf"] if m["type"] == "string")
    cpu_shares = next(m for m in resources["properties"]["cpu_shares"]["anyOf"] if "type" in m)
    assert (cpu_shares["minimum"], cpu_shares["maximum"]) == (2, 262144)
    for name, node in props.items():
        assert node.get("description") or "$ref" in node or "anyOf" in node, name


def test_the_normalised_form_is_an_accepted_spelling_of_itself(tmp_path: Any) -> None:
    raw = {
        "rootfs": str(tmp_path),
        "command": ["sleep", "1"],
        "env": ["B=2", "A=1"],
        "mounts": [{"type": "tmpfs", "target": "/run/"}, {"source": "/", "target": "/host"}],
        "resources": {"memory": "64m", "memory_swap": -1, "cpus": 1.23456},
        "restart_policy": "on-failure:3",
        "healthcheck": {"test": ["true"]},
        "stop_signal": 9,
        "network": {"networks": ["b", {"name": "a", "aliases": "x"}]},
        "ports": ["8000-8001:80-81/udp", {"container_port": 9}],
        "dns": {"search": "example.org"},
        "log": {"max_size": "1m"},
    }
    once = normalise(raw, name="n")
    assert normalise(once, name="n") == once
    assert tuple(once) == SPEC_FIELDS
    assert ContainerSpec.model_validate(once).model_dump(mode="json") == once
    assert [m["target"] for m in once["mounts"]] == ["/host", "/run"]
    assert once["resources"]["cpus"] == 1.235 and once["stop_signal"] == "SIGKILL"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"resources": {"pids_limit": 1 << 64}}, "spec.resources.pids_limit"),
        ({"resources": {"memory": 1 << 70}}, "spec.resources.memory"),
        ({"resources": {"memory": "9" * 40 + "t"}}, "spec.resources.memory"),
        ({"resources": {"memory": "64m", "memory_swap": 1 << 64}}, "spec.resources.memory_swap"),
        ({"healthcheck": {"test": ["true"], "retries": 1 << 64}}, "spec.healthcheck.retries"),
        (
            {"restart_policy": {"name": "on-failure", "max_retries": 1 << 64}},
            "spec.restart_policy.max_retries",
        ),
        ({"log": {"max_size": 1 << 64}}, "spec.log.max_size"),
        ({"stop_timeout": float("nan")}, "spec.stop_timeout"),
        (
            {"healthcheck": {"test": ["true"], "interval": float("inf")}},
            "spec.healthcheck.interval",
        ),
    ],
)
def test_out_of_range_numbers_are_refused_naming_their_field(
    fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(Invalid) as caught:
        normalise({"rootfs": "/", "command": ["x"], **fields}, name="n")
    assert caught.value.field == field
    assert caught.value.detail.startswith(field + ": ")


@pytest.mark.parametrize(
    "fields",
    [
        {"image": "x" * 20000},
        {"hostname": "h" * 20000},
        {"env": {"K": ["v" * 20000]}},
        {"stop_signal": "S" * 20000},
        {"ports": ["p" * 20000]},
        {"mounts": [{"type": "t" * 20000, "target": "/x"}]},
        {"workdir": "w" * 20000},
        {"resources": {"memory": "m" * 20000}},
    ],
)
def test_error_messages_are_bounded_whatever_the_input(fields: dict[str, Any]) -> None:
    with pytest.raises(Invalid) as caught:
        normalise({"rootfs": "/", "command": ["x"], **fields}, name="n")
    assert len(caught.value.detail) <= MAX_MESSAGE, caught.value.detail[:500]
    assert len(caught.value.detail) < 300, caught.value.detail  # each quotes a short excerpt


def test_a_long_container_name_gets_a_short_error() -> None:
    with pytest.raises(Invalid) as caught:
        validate_name("-" + "n" * 20000)
    assert caught.value.field == "name" and len(caught.value.detail) < 100 + 2 * MAX_SHOWN


def test_union_tags_are_not_part_of_a_field_name() -> None:
    cases = {
        "spec.mounts[0].source": {"mounts": [{"target": "/x"}]},
        "spec.mounts[0].target": {"mounts": [{"type": "tmpfs", "target": 5}]},
        "spec.mounts[0].type": {"mounts": [{"type": "nfs", "target": "/x"}]},
        "spec.restart_policy.max_retries": {"restart_policy": {"name": "always", "max_retries": 1}},
        "spec.ports[1].protocol": {"ports": ["80", {"container_port": 1, "protocol": "icmp"}]},
        "spec.ports[0]": {"ports": [7]},
        "spec.env.bind": {"env": {"bind": ["not", "a", "string"]}},
    }
    for field, fields in cases.items():
        with pytest.raises(Invalid) as caught:
            normalise({"rootfs": "/", "command": ["x"], **fields}, name="n")
        assert caught.value.field == field, (fields, caught.value.detail)


def test_the_input_model_alone_checks_nothing_of_the_host() -> None:
    """What the API validates at its edge needs no host: a missing bind source is the
    normaliser's refusal, with the client's index."""
    given = ContainerSpecInput.model_validate(
        {"mounts": [{"source": "/nonexistent-b", "target": "/b"}, {"source": "/", "target": "/a"}]}
    )
    assert [m.target for m in given.mounts] == ["/b", "/a"]
    with pytest.raises(Invalid) as caught:
        normalise(given.model_copy(update={"rootfs": "/", "command": ["x"]}), name="n")
    assert caught.value.field == "spec.mounts[0].source"
