"""The container spec: typed models that are both the one normaliser and the API's schema.

``normalise`` turns any accepted spelling of a spec into one canonical JSON object with
every field present, so equal meanings compare equal (``"1g"`` and ``1073741824``,
``["A=1"]`` and ``{"A": "1"}``, ``"on-failure:3"`` and its object form). Errors name the
dotted field (``spec.resources.memory``). See docs/api.md, "The container spec".

- :mod:`.models`: :class:`ContainerSpecInput` (what a client sends; the request bodies'
  ``spec``) and :class:`ContainerSpec` (normalised: stored, compared, shown);
- :mod:`.types`: the value spellings (``Size``, ``Signal``, ``EnvMap``, …);
- :mod:`.resources`, :mod:`.network`: the sections;
- :mod:`.fields`: an error's dotted field name;
- :mod:`.normalise`: the spec meets the host and the image store.
"""

from __future__ import annotations

import re
from typing import Any, Final

from gantry.engine.errors import Invalid
from gantry.engine.spec.fields import invalid_from, shown
from gantry.engine.spec.models import (
    LOG_MIN_SIZE,
    RESTART_POLICIES,
    SPEC_FIELDS,
    ContainerSpec,
    ContainerSpecInput,
)
from gantry.engine.spec.normalise import DEFAULT_PATH, ImageResolver, normalise, parse_spec
from gantry.engine.spec.resources import MIN_MEMORY, RESOURCE_FIELDS
from gantry.engine.spec.types import parse_size, signal_name

__all__ = [
    "DEFAULT_PATH",
    "IN_PLACE_FIELDS",
    "LOG_MIN_SIZE",
    "MIN_MEMORY",
    "NAME_RE",
    "RESOURCE_FIELDS",
    "RESTART_POLICIES",
    "SPEC_FIELDS",
    "ContainerSpec",
    "ContainerSpecInput",
    "ImageResolver",
    "invalid_from",
    "normalise",
    "parse_size",
    "parse_spec",
    "signal_name",
    "validate_name",
]

NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

#: Fields that change without recreating the container: the agent's own bookkeeping,
#: and the resources (written to the live cgroup when the host can, see Engine).
IN_PLACE_FIELDS: Final = frozenset(
    {"labels", "restart_policy", "healthcheck", "stop_signal", "stop_timeout", "log"}
    | {f"resources.{key}" for key in RESOURCE_FIELDS}
)


def validate_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise Invalid(
            f"{field}: must be 1-128 characters, a letter or digit first, then letters, "
            f"digits, '_', '.' or '-'; got {shown(name)}",
            field,
        )
    return name
