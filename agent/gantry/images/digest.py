"""Digests (``sha256:<64 hex>``), the names of everything in the content store."""

from __future__ import annotations

import hashlib
import re
from typing import Final

from gantry.images.errors import ImageError

ALGORITHM: Final = "sha256"
_DIGEST: Final = re.compile(r"^sha256:[0-9a-f]{64}$")


def validate(digest: object, field: str = "digest") -> str:
    """Return ``digest`` if it is a well-formed ``sha256:<hex>`` digest, else raise."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ImageError(f"{field}: not a sha256 digest: {digest!r}")
    return digest


def hex_of(digest: str) -> str:
    """The 64 hex characters of a validated digest."""
    return validate(digest)[len(ALGORITHM) + 1 :]


def of_bytes(data: bytes) -> str:
    """The digest of ``data``."""
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def chain_id(diff_ids: list[str]) -> str:
    """The OCI ChainID of layers ``diff_ids`` (bottom first)."""
    chain = ""
    for diff_id in diff_ids:
        chain = diff_id if not chain else of_bytes(f"{chain} {diff_id}".encode())
    return chain
