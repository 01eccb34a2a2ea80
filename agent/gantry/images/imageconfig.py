"""An image's config merged with a container's own settings, the way Docker merges them
(moby ``daemon/create.go`` merge and ``container.Config`` defaults):

- ``entrypoint``: the container's if it sets one (an empty list clears the image's);
  otherwise the image's.
- ``cmd``: the container's if it sets one; otherwise the image's, but only when the
  container did not set an entrypoint (a new entrypoint drops the image's cmd).
- ``env``: the container's variables, then every image variable whose name the container
  did not set.
- ``PATH`` defaults to Docker's when neither sets it.
- ``working_dir``, ``user``, ``stop_signal``: the container's, else the image's
  (``/``, root and SIGTERM when neither says).
- ``exposed_ports``, ``volumes``: the union; ``labels``: the image's updated by the
  container's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gantry.images.errors import ImageError

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""Set when neither the image nor the container gives a PATH (as Docker does)."""


@dataclass(frozen=True)
class ContainerSettings:
    """What a container may set over its image (None: not set)."""

    entrypoint: Sequence[str] | None = None
    cmd: Sequence[str] | None = None
    env: Sequence[str] | Mapping[str, str] | None = None
    working_dir: str | None = None
    user: str | None = None
    exposed_ports: Sequence[str] = ()
    volumes: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str | None = None


@dataclass(frozen=True)
class Merged:
    """The settings a container runs with."""

    args: tuple[str, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    working_dir: str
    user: str
    exposed_ports: tuple[str, ...]
    volumes: tuple[str, ...]
    labels: dict[str, str]
    stop_signal: str


def _strings(value: Any, field_name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ImageError(f"{field_name}: must be a list of strings")
    if not all(isinstance(item, str) for item in value):
        raise ImageError(f"{field_name}: must be a list of strings")
    return tuple(value)


def _env_list(value: Any, field_name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        items = []
        for key, val in value.items():
            if not isinstance(key, str) or not key or "=" in key or not isinstance(val, str):
                raise ImageError(f"{field_name}: invalid variable {key!r}")
            items.append(f"{key}={val}")
        return tuple(items)
    items_t = _strings(value, field_name) or ()
    for item in items_t:
        if not item.partition("=")[0]:
            raise ImageError(f"{field_name}: invalid variable {item!r}")
    return items_t


def _port(value: str, field_name: str) -> str:
    number, _slash, proto = value.partition("/")
    proto = proto or "tcp"
    if not number.isdigit() or not 0 < int(number) < 65536 or proto not in ("tcp", "udp", "sctp"):
        raise ImageError(f"{field_name}: invalid port {value!r}")
    return f"{int(number)}/{proto}"


def merge(image_config: Mapping[str, Any], settings: ContainerSettings) -> Merged:
    """Merge an image config's ``config`` object with a container's settings."""
    image_entry = _strings(image_config.get("Entrypoint"), "image Entrypoint") or ()
    image_cmd = _strings(image_config.get("Cmd"), "image Cmd") or ()
    user_entry = _strings(settings.entrypoint, "entrypoint")
    user_cmd = _strings(settings.cmd, "cmd")
    if user_entry:
        entrypoint, cmd = user_entry, user_cmd or ()
    else:
        entrypoint = image_entry if user_entry is None else ()
        cmd = user_cmd if user_cmd else image_cmd
    user_env = _env_list(settings.env, "env")
    names = {item.partition("=")[0] for item in user_env}
    image_env = _env_list(image_config.get("Env"), "image Env")
    env = user_env + tuple(item for item in image_env if item.partition("=")[0] not in names)
    if not any(item.startswith("PATH=") for item in env):
        env += (DEFAULT_PATH,)
    ports = dict.fromkeys(
        _port(p, "image ExposedPorts") for p in (image_config.get("ExposedPorts") or {})
    )
    ports.update(dict.fromkeys(_port(p, "exposed_ports") for p in settings.exposed_ports))
    volumes = dict.fromkeys(str(v) for v in (image_config.get("Volumes") or {}))
    for volume in settings.volumes:
        if not volume.startswith("/"):
            raise ImageError(f"volumes: {volume!r} is not an absolute path")
        volumes[volume] = None
    labels = {str(k): str(v) for k, v in (image_config.get("Labels") or {}).items()}
    labels.update(settings.labels)
    working_dir = settings.working_dir or str(image_config.get("WorkingDir") or "") or "/"
    if not working_dir.startswith("/"):
        raise ImageError(f"working_dir: {working_dir!r} is not an absolute path")
    args = entrypoint + cmd
    if not args:
        raise ImageError("cmd: no command given and the image has no Entrypoint or Cmd")
    return Merged(
        args=args,
        entrypoint=entrypoint,
        cmd=cmd,
        env=env,
        working_dir=working_dir,
        user=settings.user or str(image_config.get("User") or "") or "0",
        exposed_ports=tuple(ports),
        volumes=tuple(volumes),
        labels=labels,
        stop_signal=settings.stop_signal or str(image_config.get("StopSignal") or "") or "SIGTERM",
    )
