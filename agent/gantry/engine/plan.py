"""Desired state: compare two normalised specs and plan the actions that converge them.

Pure functions (no I/O), so ``dry_run`` answers exactly what a real request would do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from gantry.engine.errors import Invalid
from gantry.engine.spec import IN_PLACE_FIELDS

__all__ = ["DESIRED_STATES", "Plan", "changed_fields", "plan"]

DesiredState = Literal["present", "running", "stopped"]
DESIRED_STATES: Final = ("present", "running", "stopped")


def changed_fields(
    before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """Dotted names of every leaf that differs; objects are compared key by key, lists
    and scalars as wholes."""
    fields: list[str] = []
    for key in sorted(set(before) | set(after)):
        name = f"{prefix}{key}"
        old, new = before.get(key), after.get(key)
        if (
            isinstance(old, Mapping)
            and isinstance(new, Mapping)
            and key in ("resources", "capabilities", "network", "restart_policy")
        ):
            fields.extend(changed_fields(old, new, f"{name}."))
        elif old != new:
            fields.append(name)
    return fields


@dataclass(frozen=True)
class Plan:
    actions: tuple[str, ...]
    fields: tuple[str, ...]
    """Changed spec fields (without the ``spec.`` prefix)."""
    state_changes: bool


def plan(
    current_spec: Mapping[str, Any] | None,
    current_status: str | None,
    desired_spec: Mapping[str, Any],
    desired_state: str,
    *,
    resources_in_place: bool,
) -> Plan:
    """The actions, in order, that take a container from its current spec and status
    (``None`` when it does not exist) to the desired ones."""
    if desired_state not in DESIRED_STATES:
        raise Invalid(
            f"state: must be one of {', '.join(DESIRED_STATES)}, got {desired_state!r}", "state"
        )
    actions: list[str] = []
    if current_spec is None or current_status is None:
        actions.append("create")
        if desired_state == "running":
            actions.append("start")
        return Plan(tuple(actions), tuple(changed_fields({}, desired_spec)), True)
    fields = changed_fields(current_spec, desired_spec)
    in_place = {
        field
        for field in IN_PLACE_FIELDS
        if resources_in_place or not field.startswith("resources.")
    }
    was_running = current_status in ("running", "paused", "restarting")
    if any(field not in in_place and field.split(".")[0] not in in_place for field in fields):
        actions.append("recreate")
        if desired_state == "running" or (desired_state == "present" and was_running):
            actions.append("start")
    else:
        if fields:
            actions.append("update")
        if desired_state == "running":
            if current_status == "paused":
                actions.append("unpause")
            elif not was_running:
                actions.append("start")
        elif desired_state == "stopped" and was_running:
            actions.append("stop")
    final_running = (
        "start" in actions
        or "unpause" in actions
        or (was_running and "stop" not in actions and "recreate" not in actions)
    )
    state_changes = final_running != was_running or "unpause" in actions
    return Plan(tuple(actions), tuple(fields), state_changes)
