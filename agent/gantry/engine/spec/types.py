"""The spec's value types: each accepted spelling goes through one before-validator on an
``Annotated`` alias, whose ``json_schema_input_type`` lists every form in OpenAPI, and
leaves one canonical value (``"512m"`` → ``536870912``, ``"term"`` → ``"SIGTERM"``,
``["A=1"]`` → ``{"A": "1"}``).

The parse functions are also the engine's for values outside a spec (``parse_size`` of a
setting, ``signal_name`` of a ``kill``): they raise :class:`Invalid` naming the field.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from gantry.engine.errors import Invalid
from gantry.engine.spec.fields import refuse, shown
from gantry.runtime.spec import CAPABILITIES

__all__ = [
    "INT64_MAX",
    "AbsolutePath",
    "Argv",
    "CapabilityList",
    "CpuSet",
    "EnvMap",
    "Int64",
    "OptionalArgv",
    "Signal",
    "Size",
    "SizeInput",
    "StrMap",
    "Text",
    "absolute_path",
    "at_least",
    "at_most_int64",
    "parse_size",
    "signal_name",
]

INT64_MAX: Final = (1 << 63) - 1
"""The kernel's and SQLite's integers end here; a larger value is refused naming its field."""

_UNITS: Final = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*$", re.IGNORECASE)
_CPUSET_RE: Final = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_ENV_KEY_RE: Final = re.compile(r"^[^=\x00]+$")


def _type_name(value: Any) -> str:
    return type(value).__name__


def _as_invalid(parse: Callable[[Any], Any], value: Any, field: str) -> Any:
    try:
        return parse(value)
    except PydanticCustomError as exc:
        message = (exc.context or {}).get("message", exc.message())
        raise Invalid(f"{field}: {message}", field) from None


# --- text ------------------------------------------------------------------------------------


def _text(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise refuse("must not contain a NUL character")
    return value


Text = Annotated[str, Field(min_length=1), AfterValidator(_text)]
"""A non-empty string without NUL."""

AnyText = Annotated[str, AfterValidator(_text)]
"""A string without NUL, maybe empty (an argv item)."""


def absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise refuse(f"must be an absolute path, got {shown(value)}")
    return os.path.normpath(value) if value != "/" else "/"


AbsolutePath = Annotated[
    str,
    Field(min_length=1, description="an absolute path; normalised (no '//', no trailing '/')"),
    AfterValidator(_text),
    AfterValidator(absolute_path),
]


def _argv(value: Any) -> Any:
    if isinstance(value, str):
        raise refuse(
            f"must be a list of strings (an argv, not a shell line), got str {shown(value)}"
        )
    return value


Argv = Annotated[
    list[AnyText],
    BeforeValidator(_argv, json_schema_input_type=list[str]),
    Field(description="an argv: a list of strings, never a shell line"),
]
OptionalArgv = Annotated[
    list[AnyText] | None,
    BeforeValidator(_argv, json_schema_input_type=list[str] | None),
    Field(description="an argv: a list of strings, never a shell line"),
]


# --- maps ------------------------------------------------------------------------------------


def _map(value: Any, *, allow_list: bool) -> Any:
    if value is None:
        return {}
    if allow_list and isinstance(value, list):
        out: dict[str, str] = {}
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item or "\x00" in item:
                raise refuse(f"must be KEY=VALUE, got {shown(item)}", f"[{index}]")
            key, sep, val = item.partition("=")
            if not sep or not key:
                # The whole list is blamed, as before: the item has no key to name.
                raise refuse(f"item [{index}] must be KEY=VALUE, got {shown(item)}")
            out[key] = val
        return out
    if not isinstance(value, Mapping):
        raise refuse(f"must be an object of strings, got {_type_name(value)} {shown(value)}")
    out = {}
    for key, val in value.items():
        if not isinstance(key, str) or not _ENV_KEY_RE.match(key):
            raise refuse(f"invalid key {shown(key)}", str(key))
        if isinstance(val, bool) or not isinstance(val, (str, int, float)):
            raise refuse(f"must be a string, got {_type_name(val)} {shown(val)}", key)
        if isinstance(val, str) and "\x00" in val:
            raise refuse("must not contain a NUL character", key)
        out[key] = str(val)
    return out


def _sorted_map(value: dict[str, str]) -> dict[str, str]:
    return dict(sorted(value.items()))


EnvMap = Annotated[
    dict[str, str],
    BeforeValidator(
        lambda value: _map(value, allow_list=True),
        json_schema_input_type=dict[str, str | int | float] | list[str] | None,
    ),
    AfterValidator(_sorted_map),
    Field(description='an object of strings, or a list of "KEY=VALUE" strings; sorted by key'),
]
StrMap = Annotated[
    dict[str, str],
    BeforeValidator(
        lambda value: _map(value, allow_list=False),
        json_schema_input_type=dict[str, str | int | float] | None,
    ),
    AfterValidator(_sorted_map),
    Field(description="an object of strings (numbers are turned into strings); sorted by key"),
]


# --- numbers ---------------------------------------------------------------------------------

Int64 = Annotated[int, Field(le=INT64_MAX)]


def _size(value: Any) -> Any:
    if isinstance(value, bool):
        raise refuse(f"must be a size (bytes or a string like '512m'), got bool {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise refuse(f"must not be negative, got {value}")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            # Decimal, not float: a number of 400 digits is refused as too large, not an
            # OverflowError, and "1.5g" is exact.
            return int(Decimal(match.group(1)) * _UNITS[match.group(2).lower()])
        raise refuse(f"not a size: {shown(value)} (use bytes, or e.g. '64k', '512m', '1g')")
    raise refuse(
        f"must be a size (bytes or a string like '512m'), got {_type_name(value)} {shown(value)}"
    )


def at_most_int64(value: int) -> int:
    if value > INT64_MAX:
        raise refuse(f"must be at most {INT64_MAX}, got {shown(value)}")
    return value


def at_least(minimum: int) -> Callable[[int], int]:
    """An after-validator for a lower bound of a type whose schema lists its spellings
    (``Field(ge=...)`` would not reach the schema of each)."""

    def check(value: int) -> int:
        if value < minimum:
            raise refuse(f"must be at least {minimum}, got {value}")
        return value

    return check


SIZE_PATTERN: Final = r"^\s*[0-9]+(\.[0-9]+)?\s*[bkmgtBKMGT]?[bB]?\s*$"
SizeInput = Annotated[int, Field(ge=0, le=INT64_MAX)] | Annotated[str, Field(pattern=SIZE_PATTERN)]

Size = Annotated[
    int,
    BeforeValidator(_size, json_schema_input_type=SizeInput),
    AfterValidator(at_most_int64),
    Field(description="bytes: an integer, or a string with a binary unit ('64k', '512m', '1g')"),
]


def parse_size(value: Any, field: str) -> int:
    """Bytes from an integer or a size string with a binary unit (``"512m"``)."""
    size: int = _as_invalid(lambda v: at_most_int64(_size(v)), value, field)
    return size


def _cpuset(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.replace(" ", "")
    if not _CPUSET_RE.match(text):
        raise refuse(f"not a CPU list like '0-2,4': {shown(text)}")
    return text


CpuSet = Annotated[str, AfterValidator(_cpuset), Field(min_length=1, description="CPUs as '0-2,4'")]


# --- signals ---------------------------------------------------------------------------------


def _signal(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise refuse(f"must be a signal name or number, got {_type_name(value)} {shown(value)}")
    text = str(value).strip().upper()
    if not text.startswith("SIG") and not text.isdigit():
        text = "SIG" + text
    try:
        number = int(text) if text.isdigit() else int(signal.Signals[text])
        return signal.Signals(number).name
    except (KeyError, ValueError):
        raise refuse(f"unknown signal {shown(value)}") from None


Signal = Annotated[
    str,
    BeforeValidator(_signal, json_schema_input_type=str | int),
    Field(description="a signal name (any case, with or without SIG) or number; the SIG… name"),
]


def signal_name(value: Any, field: str) -> str:
    """The ``SIG…`` name of a signal given as a name (any case, with or without SIG) or
    a number."""
    name: str = _as_invalid(_signal, value, field)
    return name


# --- capabilities ----------------------------------------------------------------------------


def _capability(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    name = value.strip().upper()
    if name == "ALL":
        return "ALL"
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in CAPABILITIES:
        raise refuse(f"unknown capability {shown(value)}")
    return name


def _capability_set(value: list[str]) -> list[str]:
    return sorted(set(value))


CapabilityList = Annotated[
    list[Annotated[str, AfterValidator(_capability)]],
    BeforeValidator(
        lambda value: [] if value is None else _argv(value),
        json_schema_input_type=list[str] | None,
    ),
    AfterValidator(_capability_set),
    Field(
        description="capability names, with or without CAP_, any case, or ALL; upper case "
        "with CAP_, sorted, de-duplicated"
    ),
]
