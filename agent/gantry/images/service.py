"""The engine's entry point to images: one object over one ``--root``.

Every method raises :class:`gantry.images.errors.ImageError` (or a subclass) with a
message that names the image, field or entry at fault, and changes nothing it did not
finish: blobs are verified before they are named, layers unpacked into ``tmp/`` and
renamed, metadata rewritten atomically.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gantry.images import commit as commit_mod
from gantry.images import formats, oci
from gantry.images import reference as refs
from gantry.images.errors import ImageError, ImageInUse, NotFound
from gantry.images.imageconfig import ContainerSettings, Merged, merge
from gantry.images.registry import Credentials, Progress, RegistryClient, RegistryOptions
from gantry.images.snapshots import Snapshot, Snapshotter
from gantry.images.store import ContentStore, GCResult, ImageRecord


@dataclass(frozen=True)
class ImageSummary:
    """One line of ``gantry images``."""

    id: str
    manifest: str
    tags: tuple[str, ...]
    created: str | None
    size: int
    """Bytes of the image's blobs (compressed layers, config)."""
    layers: int
    platform: str


class ImageService:
    """Images, layers, registries and container root filesystems under ``root``."""

    def __init__(self, root: Path | str, registry_options: RegistryOptions | None = None) -> None:
        self.store = ContentStore(root)
        self.snapshots = Snapshotter(self.store)
        self.registry = RegistryClient(self.store, registry_options)

    # --- looking up ----------------------------------------------------------------------

    def resolve(self, key: str) -> ImageRecord:
        """The image named by a reference (``busybox``, ``host:5000/app:1``) or by its id,
        manifest digest or an id prefix of 12+ hex characters."""
        if not isinstance(key, str) or not key:
            raise ImageError(f"image: not an image name or id: {key!r}")
        store_refs = self.store.refs()
        try:
            ref = refs.parse(key, "image")
        except ImageError:
            ref = None
        if ref is not None and ref.tagged in store_refs and not ref.digest:
            return self.store.get_image(store_refs[ref.tagged])
        if ref is not None and ref.digest:
            return self.store.get_image(ref.digest)
        try:
            return self.store.get_image(key)
        except NotFound:
            raise NotFound(f"no image {key!r} (pull or import it first)") from None

    def tags_of(self, image: ImageRecord) -> tuple[str, ...]:
        return tuple(sorted(name for name, m in self.store.refs().items() if m == image.manifest))

    def list_images(self) -> list[ImageSummary]:
        out = []
        store_refs = self.store.refs()
        for image in self.store.images():
            size = sum(layer.size for layer in image.layers)
            size += self.store.blob_size(image.config) if self.store.has_blob(image.config) else 0
            out.append(
                ImageSummary(
                    id=image.id,
                    manifest=image.manifest,
                    tags=tuple(sorted(n for n, m in store_refs.items() if m == image.manifest)),
                    created=image.created,
                    size=size,
                    layers=len(image.layers),
                    platform=image.platform,
                )
            )
        return sorted(out, key=lambda s: (s.created or "", s.id), reverse=True)

    def config(self, image: ImageRecord) -> dict[str, Any]:
        """The image's full config document (``config``, ``rootfs``, ``history`` …)."""
        return self.store.read_json(image.config)

    def inspect(self, key: str) -> dict[str, Any]:
        image = self.resolve(key)
        return {
            "id": image.id,
            "manifest": image.manifest,
            "tags": list(self.tags_of(image)),
            "platform": image.platform,
            "created": image.created,
            "layers": [layer.__dict__ for layer in image.layers],
            "config": self.config(image),
        }

    def merge_config(self, image: ImageRecord, settings: ContainerSettings) -> Merged:
        """The image's config merged with a container's settings (Docker's rules)."""
        return merge(self.config(image).get("config") or {}, settings)

    # --- names ---------------------------------------------------------------------------

    def tag(self, source: str, target: str) -> str:
        image = self.resolve(source)
        ref = refs.parse(target, "target")
        if ref.digest:
            raise ImageError("target: a tag cannot hold a digest")
        self.store.set_ref(ref.tagged, image.manifest)
        return ref.tagged

    def untag(self, name: str) -> str:
        return self.store.remove_ref(refs.parse(name, "name").tagged)

    def remove(self, key: str, *, in_use: Iterable[str] | Mapping[str, str] = ()) -> ImageRecord:
        """Remove an image and its tags (``docker rmi``); refused while a container uses
        it. ``in_use`` holds the images of existing containers: image ids or manifest
        digests, or a mapping ``{container name: image id or manifest digest}`` so the
        refusal (:class:`ImageInUse`) names the containers. Space returns at :meth:`gc`."""
        image = self.resolve(key)
        if isinstance(in_use, Mapping):
            users = sorted(
                name for name, used in in_use.items() if used in (image.id, image.manifest)
            )
            if users:
                raise ImageInUse(
                    f"image {key!r} is used by container{'s' if len(users) > 1 else ''} "
                    f"{', '.join(users)}",
                    users,
                )
        elif {image.id, image.manifest} & set(in_use):
            raise ImageInUse(f"image {key!r} is used by a container", [])
        return self.store.remove_image(image.manifest)

    # --- moving images -------------------------------------------------------------------

    def pull(
        self,
        name: str,
        *,
        platform: str | oci.Platform | None = None,
        progress: Progress | None = None,
        credentials: Credentials | None = None,
    ) -> ImageRecord:
        """Pull ``name`` (tagged in the store). From a multi-platform index the host's
        platform is taken unless ``platform`` (``"linux/arm64"``, ``"linux/arm/v7"`` or a
        tuple) names another; an index without it raises :class:`NotFound` listing the
        platforms it has. ``progress`` gets one dict per step (docs/images.md).
        ``credentials`` are used for this pull instead of the configured ones."""
        wanted = oci.parse_platform(platform)
        ref = refs.parse(name, "image")
        client = self._client_for(ref.registry, credentials)
        return client.pull(ref, platform=wanted, progress=progress)

    def _client_for(self, registry: str, credentials: Credentials | None) -> RegistryClient:
        """The shared client, or one for a single operation with its own credentials
        (its tokens are its own; blobs still go through the one store, fetched once)."""
        if credentials is None:
            return self.registry
        if (
            not isinstance(credentials, Credentials)
            or not isinstance(credentials.username, str)
            or not isinstance(credentials.password, str)
            or not credentials.username
        ):
            raise ImageError("credentials: need a username and a password (strings)")
        options = dataclasses.replace(
            self.registry.options,
            credentials={**self.registry.options.credentials, registry: credentials},
        )
        return RegistryClient(self.store, options)

    def push(
        self,
        name: str,
        *,
        source: str | None = None,
        progress: Progress | None = None,
        credentials: Credentials | None = None,
    ) -> str:
        """Push the image ``source`` (default: ``name`` itself) as ``name``; returns the
        manifest digest. ``credentials`` are used for this push instead of the
        configured ones."""
        ref = refs.parse(name, "image")
        image = self.resolve(source or name)
        return self._client_for(ref.registry, credentials).push(ref, image, progress=progress)

    def load(
        self,
        path: Path,
        *,
        name: str | None = None,
        platform: str | oci.Platform | None = None,
    ) -> list[formats.Imported]:
        """Import an archive: OCI layout (dir or tar), docker save archive, or a rootfs
        tarball (which then needs ``name`` or stays untagged). Multi-platform images in
        it give the host's platform, or ``platform``'s."""
        path = Path(path)
        wanted = oci.parse_platform(platform)
        if not path.exists():
            raise NotFound(f"{path}: no such file or directory")
        kind = formats.sniff_archive(path)
        if kind == "oci":
            return formats.import_oci_layout(self.store, path, name=name, platform=wanted)
        if kind == "docker":
            return formats.import_docker_archive(self.store, path, platform=wanted)
        return [formats.import_rootfs(self.store, path, name=name)]

    def import_rootfs(
        self,
        path: Path,
        *,
        name: str | None = None,
        config: dict[str, Any] | None = None,
        comment: str = "",
    ) -> ImageRecord:
        return formats.import_rootfs(
            self.store, Path(path), name=name, config=config, comment=comment
        ).image

    def save(self, names: list[str], path: Path, *, format: str = "docker") -> None:
        """Write images to ``path``: ``docker`` (docker save archive) or ``oci`` (an OCI
        layout: a directory, or a tar when ``path`` ends in ``.tar``)."""
        images = []
        for name in names:
            image = self.resolve(name)
            try:
                tagged: str | None = (
                    refs.parse(name, "name").tagged if not name.startswith("sha256:") else None
                )
            except ImageError:
                tagged = None
            images.append((image, tagged if tagged in self.store.refs() else None))
        if format == "docker":
            formats.export_docker_archive(self.store, images, Path(path))
        elif format == "oci":
            formats.export_oci_layout(self.store, images, Path(path))
        else:
            raise ImageError(f"format: {format!r} is not one of docker, oci")

    # --- containers ----------------------------------------------------------------------

    def prepare_rootfs(
        self,
        container_id: str,
        image: str | ImageRecord | None,
        *,
        hostname: str = "",
        hosts: str = "",
        resolv_conf: str = "",
    ) -> Snapshot:
        """Create and mount container ``container_id``'s rootfs over ``image``."""
        record = self.resolve(image) if isinstance(image, str) else image
        return self.snapshots.prepare(
            container_id, record, hostname=hostname, hosts=hosts, resolv_conf=resolv_conf
        )

    def unmount_rootfs(self, container_id: str) -> None:
        self.snapshots.unmount(container_id)

    def remove_rootfs(self, container_id: str) -> None:
        self.snapshots.remove(container_id)

    def commit(
        self,
        container_id: str,
        base: str | ImageRecord | None,
        *,
        name: str | None = None,
        author: str = "",
        comment: str = "",
        changes: dict[str, Any] | None = None,
    ) -> ImageRecord:
        """Commit container ``container_id``'s changes over image ``base`` as a new image
        (tagged ``name`` if given). The init layer is not included."""
        record = self.resolve(base) if isinstance(base, str) else base
        ref = refs.parse(name, "name") if name else None
        image = commit_mod.commit_upper(
            self.store,
            record,
            self.snapshots.upper(container_id),
            author=author,
            comment=comment,
            changes=changes,
        )
        if ref is not None:
            self.store.set_ref(ref.tagged, image.manifest)
        return image

    def gc(self, extra_roots: Iterable[str] = ()) -> GCResult:
        """Remove blobs, layers and untagged images nothing references; ``extra_roots``
        are image ids or manifest digests still in use (existing containers' images)."""
        return self.store.gc(extra_roots)


__all__ = [
    "ContainerSettings",
    "Credentials",
    "ImageService",
    "ImageSummary",
    "Merged",
    "RegistryOptions",
    "oci",
]
