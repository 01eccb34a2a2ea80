"""The engine's errors: each names what is wrong and, when one input is at fault, the field.

The API maps them to HTTP status codes in one place; nothing below the API knows HTTP.
"""

from __future__ import annotations

__all__ = ["Conflict", "EngineError", "Invalid", "NotFound", "Unavailable"]


class EngineError(Exception):
    """Base of the engine's errors: ``detail`` for a human, ``field`` for a program."""

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class Invalid(EngineError):
    """An input has a wrong type or value (HTTP 422)."""


class NotFound(EngineError):
    """No such container, path or file (HTTP 404)."""


class Conflict(EngineError):
    """The container is in the wrong state for the verb, or the name is taken (HTTP 409)."""


class Unavailable(EngineError):
    """A feature this agent does not have yet (HTTP 404, the detail says which)."""
