"""Desired-state planning: which actions take a container from what it is to what is
wanted, and which fields differ. Pure logic: what dry_run answers is what a real run does."""

from __future__ import annotations

from typing import Any

import pytest
from gantry.engine.errors import Invalid
from gantry.engine.plan import changed_fields, plan
from gantry.engine.spec import normalise


def spec(**fields: Any) -> dict[str, Any]:
    raw = {"rootfs": "/srv/rootfs", "command": ["sleep", "1"], **fields}
    return normalise(raw, name="web", rootfs_check=lambda _path: True)


BASE = spec()


@pytest.mark.parametrize(
    ("status", "desired", "state", "actions"),
    [
        (None, BASE, "running", ("create", "start")),
        (None, BASE, "present", ("create",)),
        (None, BASE, "stopped", ("create",)),
        ("running", BASE, "running", ()),
        ("running", BASE, "present", ()),
        ("running", BASE, "stopped", ("stop",)),
        ("paused", BASE, "running", ("unpause",)),
        ("paused", BASE, "stopped", ("stop",)),
        ("stopped", BASE, "running", ("start",)),
        ("created", BASE, "present", ()),
        ("stopped", BASE, "stopped", ()),
        ("restarting", BASE, "stopped", ("stop",)),
        ("running", spec(command=["other"]), "running", ("recreate", "start")),
        ("running", spec(command=["other"]), "present", ("recreate", "start")),
        ("stopped", spec(command=["other"]), "present", ("recreate",)),
        ("running", spec(command=["other"]), "stopped", ("recreate",)),
        ("running", spec(labels={"a": "b"}), "running", ("update",)),
        ("stopped", spec(restart_policy="always"), "running", ("update", "start")),
        ("running", spec(stop_timeout=3), "stopped", ("update", "stop")),
        ("running", spec(resources={"memory": "64m"}), "running", ("recreate", "start")),
    ],
)
def test_actions(
    status: str | None, desired: dict[str, Any], state: str, actions: tuple[str, ...]
) -> None:
    current = None if status is None else BASE
    assert plan(current, status, desired, state, resources_in_place=False).actions == actions


def test_resources_change_in_place_when_the_host_can() -> None:
    wanted = spec(resources={"memory": "64m", "pids_limit": 10})
    result = plan(BASE, "running", wanted, "running", resources_in_place=True)
    assert result.actions == ("update",)
    assert result.fields == ("resources.memory", "resources.pids_limit")


def test_changed_fields_name_leaves() -> None:
    assert changed_fields(BASE, BASE) == []
    other = spec(command=["x"], capabilities={"add": ["NET_ADMIN"]}, network={"mode": "host"})
    # host mode has no networks: the default network goes too
    assert changed_fields(BASE, other) == [
        "capabilities.add",
        "command",
        "network.mode",
        "network.networks",
    ]


def test_unknown_state_names_the_field() -> None:
    with pytest.raises(Invalid) as caught:
        plan(BASE, "running", BASE, "absent", resources_in_place=False)
    assert caught.value.field == "state"
