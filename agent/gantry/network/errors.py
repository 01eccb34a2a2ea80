"""The errors gantry.network raises; each says what went wrong and, for bad input, which field."""

from __future__ import annotations

from typing import Any


class NetworkError(Exception):
    """Base of every error this package raises."""


class InvalidNetworkInput(NetworkError, ValueError):
    """Bad input from a user or a config file; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NetworkNotFound(NetworkError, LookupError):
    """No network (or attachment) of that name exists."""


class NetworkExists(NetworkError):
    """A network of that name (or a conflicting subnet or bridge) already exists."""


class NetworkInUse(NetworkError):
    """A network still has containers attached and cannot be removed."""

    def __init__(self, name: str, containers: list[str]) -> None:
        shown = ", ".join(sorted(containers))
        super().__init__(f"network {name!r} is in use by container(s): {shown}")
        self.name = name
        self.containers = containers


class CNIError(NetworkError):
    """A CNI plugin failed; code, msg and details come from the plugin's JSON error.

    Codes 1-99 are the spec's (1 incompatible version, 2 unsupported field, 3 unknown
    container, 4 invalid environment, 5 I/O failure, 6 decode failure, 7 invalid config,
    11 try again later, 50 not available, 51 limited connectivity); 100+ are the plugin's.
    Code 0 here means the plugin gave no parseable error.
    """

    def __init__(
        self, plugin: str, command: str, code: int, msg: str, details: str = "", **extra: Any
    ) -> None:
        text = f"CNI plugin {plugin} {command} failed"
        if code:
            text += f" (code {code})"
        text += f": {msg}"
        if details:
            text += f" ({details})"
        super().__init__(text)
        self.plugin = plugin
        self.command = command
        self.code = code
        self.msg = msg
        self.details = details
        self.extra = extra
