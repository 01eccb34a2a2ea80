"""Image references as Docker spells them: ``[registry/]repository[:tag][@digest]``.

``busybox`` means ``docker.io/library/busybox:latest``; the first component is a registry
when it holds a ``.`` or a ``:`` or is ``localhost``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from gantry.images import digest as dg
from gantry.images.errors import ImageError

DEFAULT_REGISTRY: Final = "docker.io"
DEFAULT_TAG: Final = "latest"
_COMPONENT: Final = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG: Final = re.compile(r"^[\w][\w.-]{0,127}$")
_HOST: Final = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$")


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """``registry/repository`` (no tag or digest)."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def familiar(self) -> str:
        """The short form Docker prints (``busybox:latest``, ``localhost:5000/app:1``)."""
        name = self.name
        if self.registry == DEFAULT_REGISTRY:
            name = self.repository.removeprefix("library/")
        return f"{name}:{self.tag}" if self.tag else f"{name}@{self.digest}"

    @property
    def tagged(self) -> str:
        """The key refs are stored under: ``registry/repository:tag``."""
        return f"{self.name}:{self.tag or DEFAULT_TAG}"


def parse(text: object, field: str = "reference") -> Reference:
    """Parse and normalise ``text``; raise :class:`ImageError` naming ``field`` if invalid."""
    if not isinstance(text, str) or not text or len(text) > 255 or text != text.strip():
        raise ImageError(f"{field}: not an image reference: {text!r}")
    rest, _at, digest = text.partition("@")
    if digest:
        dg.validate(digest, field)
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise ImageError(f"{field}: invalid tag {tag!r} in {text!r}")
    parts = rest.split("/")
    registry = DEFAULT_REGISTRY
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry = parts.pop(0)
        if not _HOST.match(registry):
            raise ImageError(f"{field}: invalid registry {registry!r} in {text!r}")
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DEFAULT_REGISTRY
    for part in parts:
        if not _COMPONENT.match(part):
            raise ImageError(f"{field}: invalid repository component {part!r} in {text!r}")
    if registry == DEFAULT_REGISTRY and len(parts) == 1:
        parts.insert(0, "library")
    if tag is None and not digest:
        tag = DEFAULT_TAG
    return Reference(registry, "/".join(parts), tag, digest or None)
