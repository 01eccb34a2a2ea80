"""The base of every model of the spec: strict (a wrong type is refused, never coerced),
closed (an unknown field is an error naming it), frozen (a normalised spec is a value),
and finite (Python's JSON parser reads ``NaN`` and ``Infinity``; no duration is either)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["SpecModel"]


class SpecModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)
