"""The one exception family of gantry.images: every failure a caller can act on."""

from __future__ import annotations


class ImageError(Exception):
    """An image operation failed; the message names the image, blob, entry or field."""


class DigestMismatch(ImageError):
    """Content did not hash to the digest it was announced with."""


class UnsafeLayer(ImageError):
    """A layer tar tried to leave its directory or create something it may not."""


class NotFound(ImageError):
    """No such image, reference, blob or layer."""


class RegistryError(ImageError):
    """A registry answered with an error (or not at all)."""


class CertificateError(RegistryError):
    """A registry's TLS certificate could not be verified (unknown CA, wrong name, expired)."""


class ImageInUse(ImageError):
    """An image cannot be removed: containers use it (``containers`` names them)."""

    def __init__(self, message: str, containers: list[str]) -> None:
        super().__init__(message)
        self.containers = containers
