"""gantry.fleet.container's options and docs/api.md's spec tables agree with the agent's spec
models: every option names a field the models have, with a compatible type and the same
sub-options; every field of the models is in the docs' tables, and nothing else is."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from gantry.engine.spec import SPEC_FIELDS, ContainerSpecInput
from gantry.engine.spec.models import BindMount, Healthcheck, TmpfsMount
from gantry.engine.spec.network import Endpoint
from gantry.engine.spec.resources import BpsDevice, IopsDevice, Resources
from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[3]

#: Spec fields the module deliberately does not offer, with the reason.
NOT_OFFERED = {
    "image_id": "output only",
    "log": "the agent's log_max_size/log_max_files apply to the module's containers",
}

#: The module's option types each JSON type of a model field may take.
COMPATIBLE = {
    "str": {"string"},
    "path": {"string"},
    "int": {"integer"},
    "float": {"number", "integer"},
    "bool": {"boolean"},
    "dict": {"object"},
    "list": {"array"},
}


@pytest.fixture(scope="module")
def container_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """plugins/modules/container.py imported as ansible-core would, through a collection
    tree that is a symlink to this checkout."""
    tree = tmp_path_factory.mktemp("collections")
    (tree / "ansible_collections" / "gantry").mkdir(parents=True)
    (tree / "ansible_collections" / "gantry" / "fleet").symlink_to(REPO)
    sys.path.insert(0, str(tree))
    try:
        yield importlib.import_module("ansible_collections.gantry.fleet.plugins.modules.container")
    finally:
        sys.path.remove(str(tree))
        for name in [n for n in sys.modules if n.startswith("ansible_collections.gantry")]:
            del sys.modules[name]


def _field_schema(model: type[BaseModel], name: str) -> dict[str, Any]:
    node: dict[str, Any] = model.model_json_schema()["properties"][name]
    return node


def _json_types(node: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    if "type" in node:
        out.add(node["type"])
    if "$ref" in node:
        out |= _json_types(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    for key in ("anyOf", "oneOf"):
        for member in node.get(key, ()):
            out |= _json_types(member, defs)
    if "const" in node or "enum" in node:
        out.add("string")
    return out - {"null"}


def _model_at(path: str) -> tuple[type[BaseModel], str]:
    """The model holding the dotted spec field ``path``, and the field's name in it."""
    head, _dot, rest = path.partition(".")
    if not rest:
        return ContainerSpecInput, head
    section = ContainerSpecInput.model_fields[head].annotation
    assert isinstance(section, type) and issubclass(section, BaseModel), path
    assert rest in section.model_fields, path
    return section, rest


def test_every_option_names_a_field_of_the_models_with_a_compatible_type(
    container_module: ModuleType,
) -> None:
    from ansible_collections.gantry.fleet.plugins.module_utils._container_spec import (
        OPTION_FIELDS,
    )

    options = container_module.argument_spec()
    schema = ContainerSpecInput.model_json_schema()
    defs = schema.get("$defs", {})
    for option, path in OPTION_FIELDS:
        model, name = _model_at(path)
        assert name in model.model_fields, (option, path)
        kind = options[option]["type"]
        if kind == "raw":
            continue  # the module sends what the task gave; the agent takes each spelling
        node = _field_schema(model, name)
        accepted = _json_types(node, model.model_json_schema().get("$defs", defs))
        assert COMPATIBLE[kind] & accepted, (option, kind, path, accepted)


def test_every_field_of_the_models_is_an_option_or_named_here(
    container_module: ModuleType,
) -> None:
    from ansible_collections.gantry.fleet.plugins.module_utils._container_spec import (
        OPTION_FIELDS,
    )

    offered = {path for _option, path in OPTION_FIELDS}
    leaves = set()
    for name in SPEC_FIELDS:
        if name in ("resources", "capabilities", "network", "dns"):
            section = ContainerSpecInput.model_fields[name].annotation
            assert isinstance(section, type) and issubclass(section, BaseModel)
            leaves |= {f"{name}.{sub}" for sub in section.model_fields}
        else:
            leaves.add(name)
    assert leaves - offered == set(NOT_OFFERED)
    assert offered - leaves == set()


def _sub_options(options: dict[str, Any], option: str) -> set[str]:
    return set(options[option]["options"])


def test_sub_options_are_the_models_fields(container_module: ModuleType) -> None:
    options = container_module.argument_spec()
    assert _sub_options(options, "mounts") == set(BindMount.model_fields) | set(
        TmpfsMount.model_fields
    )
    mount_types = options["mounts"]["options"]["type"]["choices"]
    assert set(mount_types) == {"bind", "tmpfs"}
    assert _sub_options(options, "healthcheck") == set(Healthcheck.model_fields)
    assert _sub_options(options, "networks") == {"name"} | set(Endpoint.model_fields)
    for option in ("device_read_bps", "device_write_bps"):
        assert _sub_options(options, option) == set(BpsDevice.model_fields)
    for option in ("device_read_iops", "device_write_iops"):
        assert _sub_options(options, option) == set(IopsDevice.model_fields)
        assert options[option]["options"]["rate"]["type"] == "int"


def _table_fields(section: str, heading: str) -> list[str]:
    """The first column of the table that follows ``heading`` in ``section`` of docs/api.md."""
    text = (REPO / "docs" / "api.md").read_text()
    start = text.index(section)
    start = text.index(heading, start)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cell = line.split("|")[1].strip()
        match = re.fullmatch(r"`([a-z_]+)`", cell)
        if match:
            rows.append(match.group(1))
    return rows


def test_the_docs_tables_list_the_models_fields() -> None:
    assert _table_fields("## The container spec", "| field | type | default |") == list(SPEC_FIELDS)
    assert _table_fields("## The container spec", "`resources`:") == list(Resources.model_fields)
    mount_fields = set(BindMount.model_fields) | set(TmpfsMount.model_fields)
    assert set(_table_fields("## The container spec", "A mount:")) == mount_fields
