"""The agent's domain: desired-state containers, lifecycle, recovery, events. Owns SQLite."""

from gantry.engine.core import Engine
from gantry.engine.errors import Conflict, EngineError, Invalid, NotFound, Unavailable

__all__ = ["Conflict", "Engine", "EngineError", "Invalid", "NotFound", "Unavailable"]
