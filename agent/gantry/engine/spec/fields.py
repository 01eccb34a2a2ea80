"""Errors of the spec's models, named by the dotted field the client wrote.

A validator refuses with :func:`refuse` (a message, and optionally the sub-field it is
about when a check of the whole object blames one member); :func:`invalid_from` turns the
first error of a pydantic ``ValidationError`` into the engine's :class:`Invalid`, whose
``field`` is the dotted path of the input (``spec.resources.memory``,
``spec.mounts[0].source``). Union tags and pydantic's own markers in an error's ``loc`` are
not part of that name: they are dropped by walking the loc along the input itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from gantry.engine.errors import Invalid

__all__ = [
    "MAX_MESSAGE",
    "MAX_SHOWN",
    "TAGS",
    "bounded",
    "dotted",
    "error_field",
    "error_message",
    "invalid_from",
    "refuse",
    "shown",
]

MAX_SHOWN: Final = 80
"""At most this many characters of a client's value are repeated in an error message."""

MAX_MESSAGE: Final = 400
"""No error message is longer, whatever a lower layer put in it."""

TAGS: Final = frozenset(
    {
        # the spec's discriminated unions (gantry.engine.spec.models, .network)
        "bind",
        "tmpfs",
        "no",
        "on-failure",
        "always",
        "unless-stopped",
        "string",
        "object",
        "list",
        # pydantic's own members and markers
        "[key]",
        "str",
        "int",
        "float",
        "bool",
        "none",
    }
)
"""Parts of a ``loc`` that name a union member or a marker, not a field of the input."""

_CUSTOM: Final = "gantry"


def shown(value: Any) -> str:
    """``repr(value)``, cut to :data:`MAX_SHOWN` characters: a 20 KB name must not make a
    20 KB error message."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 5] + "…" + text[-4:]


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` cut to ``limit`` characters (lower layers quote their input whole)."""
    return message if len(message) <= limit else message[: limit - 5] + "…" + message[-4:]


def refuse(message: str, at: str = "") -> PydanticCustomError:
    """The error a validator raises: ``message`` (no field name; the handler prefixes it),
    about the sub-field ``at`` of what it validates (``"memory_swap"``, ``"[1].path"``)."""
    return PydanticCustomError(
        _CUSTOM, "{message}", {"message": bounded(message), "at": bounded(at, MAX_SHOWN)}
    )


def _is_tag(part: Any) -> bool:
    return isinstance(part, str) and (part in TAGS or part.startswith("function-"))


def dotted(loc: Sequence[Any], data: Any, prefix: str = "") -> str:
    """The dotted name of ``loc`` in ``data`` (the input the loc points into).

    A part is the input's own key or index while the walk can follow the input; a part
    the input does not have is a union tag and dropped (a missing key is kept: it is the
    field the client left out)."""
    parts: list[str | int] = []
    node: Any = data
    following = True
    for part in loc:
        if following and isinstance(node, Mapping) and part in node:
            node = node[part]
            parts.append(part)
            continue
        if following and isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            parts.append(part)
            continue
        if _is_tag(part):
            continue
        parts.append(part)
        following = False
    text = prefix
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _join(field: str, at: str) -> str:
    if not at:
        return field
    if at.startswith("["):
        return field + at
    return f"{field}.{at}" if field else at


def error_field(error: Mapping[str, Any], data: Any, prefix: str = "") -> str:
    """The dotted field one pydantic error is about."""
    field = dotted(error.get("loc", ()), data, prefix)
    ctx = error.get("ctx") or {}
    if error.get("type") == _CUSTOM:
        return _join(field, str(ctx.get("at") or ""))
    if error.get("type") == "union_tag_invalid":
        return _join(field, str(ctx.get("discriminator", "")).strip("'"))
    return field


def error_message(error: Mapping[str, Any]) -> str:
    """One error's sentence without its field name, with the client's value bounded."""
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind == _CUSTOM:
        return str(ctx.get("message", "invalid value"))
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "union_tag_invalid":
        return f"must be one of {ctx.get('expected_tags', '?')}, got {shown(ctx.get('tag'))}"
    message = str(error.get("msg", "invalid value"))
    if "input" in error and kind not in ("model_type", "model_attributes_type", "dict_type"):
        message += f", got {shown(error['input'])}"
    elif "input" in error:
        message += f", got {type(error['input']).__name__}"
    return message


def invalid_from(exc: ValidationError, data: Any, prefix: str = "") -> Invalid:
    """The engine's error for the first error of ``exc``, raised validating ``data``."""
    errors = exc.errors()
    if not errors:  # pragma: no cover - pydantic always reports at least one
        return Invalid(f"{prefix}: invalid value", prefix or None)
    # An unknown field first, as a typo explains the errors that follow from it.
    first = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
    field = error_field(first, data, prefix) or prefix
    return Invalid(bounded(f"{field}: {error_message(first)}"), field or None)
