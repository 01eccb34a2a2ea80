"""Manifests, indexes and image configs: media types, platform choice, and turning a
manifest in the store into an image record (layers unpacked, DiffIDs verified)."""

from __future__ import annotations

import json
import platform as host_platform
import re
from collections.abc import Callable
from typing import Any, Final

from gantry.images import digest as dg
from gantry.images.errors import ImageError, NotFound
from gantry.images.store import ContentStore, ImageRecord, LayerRecord

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MANIFESTS: Final = frozenset((OCI_MANIFEST, DOCKER_MANIFEST))
INDEXES: Final = frozenset((OCI_INDEX, DOCKER_LIST))
LAYERS: Final = frozenset(
    (OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER, DOCKER_LAYER_GZIP)
)
LAYER_BY_COMPRESSION: Final = {
    "tar": OCI_LAYER,
    "gzip": OCI_LAYER_GZIP,
    "zstd": OCI_LAYER_ZSTD,
}
REF_NAME: Final = "org.opencontainers.image.ref.name"
_ARCH: Final = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
    "i686": ("386", ""),
}


Platform = tuple[str, str, str]
"""``(os, architecture, variant)`` in OCI terms; the variant may be empty."""


def host_platform_tuple() -> Platform:
    """``(os, architecture, variant)`` of this host in OCI terms."""
    machine = host_platform.machine()
    arch, variant = _ARCH.get(machine, (machine, ""))
    return "linux", arch, variant


def platform_string(os_name: str, arch: str, variant: str = "") -> str:
    return f"{os_name}/{arch}" + (f"/{variant}" if variant else "")


_ARCH_ALIASES: Final = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386"}
_OS: Final = re.compile(r"^[a-z0-9]+$")
_ARM_VARIANTS: Final = ("v8", "v7", "v6", "v5")


def parse_platform(value: str | Platform | None, field: str = "platform") -> Platform | None:
    """``"linux/arm64/v8"`` (or ``"linux/amd64"``, or a tuple) as a :data:`Platform`;
    ``None`` stays ``None`` (the host's). A bad value raises :class:`ImageError` naming
    ``field``."""
    if value is None:
        return None
    if isinstance(value, tuple):
        parts = list(value)
    elif isinstance(value, str):
        parts = value.split("/")
    else:
        raise ImageError(f"{field}: not a platform: {value!r}")
    if len(parts) == 2:
        parts.append("")
    if len(parts) != 3 or not all(isinstance(p, str) for p in parts):
        raise ImageError(f"{field}: expected os/architecture[/variant], got {value!r}")
    os_name, arch, variant = (str(p).strip().lower() for p in parts)
    arch = _ARCH_ALIASES.get(arch, arch)
    if not _OS.match(os_name) or not _OS.match(arch) or (variant and not _OS.match(variant)):
        raise ImageError(f"{field}: expected os/architecture[/variant], got {value!r}")
    if arch == "arm64" and variant == "v8":
        variant = ""  # arm64 has only v8: "linux/arm64/v8" and "linux/arm64" are one platform
    return os_name, arch, variant


def _variant_rank(arch: str, want: str, got: str) -> float:
    """How well an index entry's variant ``got`` fits the wanted ``want`` (higher is
    better, 0 means it cannot run). 32-bit arm runs older variants (a v7 host runs v6 and
    v5 images, preferring the newest); arm64 is always v8."""
    if arch == "arm64":
        return 3.0 if got in ("", "v8") else 0.0
    if got == want:
        return 3.0
    if arch == "arm" and want in _ARM_VARIANTS and got in _ARM_VARIANTS:
        older = _ARM_VARIANTS.index(got) - _ARM_VARIANTS.index(want)
        return 2.0 - older / 10 if older > 0 else 0.0
    if not got or not want:
        return 1.0
    return 0.0


def pick_platform(
    index: dict[str, Any], want: Platform | None = None, *, what: str = "index"
) -> dict[str, Any]:
    """The descriptor of ``index`` for platform ``want`` (the host's by default); a
    platform the index lacks raises :class:`NotFound` listing the ones it has."""
    os_name, arch, variant = parse_platform(want) or host_platform_tuple()
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or not manifests:
        raise ImageError(f"{what}: no manifests")
    best: tuple[float, dict[str, Any]] | None = None
    for desc in manifests:
        if not isinstance(desc, dict):
            continue
        plat = desc.get("platform")
        if not isinstance(plat, dict):
            continue
        got_arch = _ARCH_ALIASES.get(str(plat.get("architecture", "")), plat.get("architecture"))
        if plat.get("os") != os_name or got_arch != arch:
            continue
        score = _variant_rank(arch, variant, str(plat.get("variant", "") or ""))
        if score and (best is None or score > best[0]):
            best = (score, desc)
    if best is not None:
        return best[1]
    plain = [d for d in manifests if isinstance(d, dict) and "platform" not in d]
    if len(plain) == 1:
        return plain[0]
    available = sorted(
        platform_string(
            str(d["platform"].get("os", "?")),
            str(d["platform"].get("architecture", "?")),
            str(d["platform"].get("variant", "") or ""),
        )
        for d in manifests
        if isinstance(d, dict)
        and isinstance(d.get("platform"), dict)
        and d["platform"].get("os") != "unknown"  # BuildKit's attestation manifests
    )
    raise NotFound(
        f"{what}: no image for platform {platform_string(os_name, arch, variant)} "
        f"(the index has: {', '.join(available) or 'no platforms'})"
    )


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ImageError(f"{what}: invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ImageError(f"{what}: not a JSON object")
    return value


def media_type_of(doc: dict[str, Any], fallback: str = "") -> str:
    value = doc.get("mediaType")
    if isinstance(value, str) and value:
        return value
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc and "config" in doc:
        return OCI_MANIFEST
    return fallback


def canonical(doc: dict[str, Any]) -> bytes:
    """The bytes we store a manifest or config as when we write one ourselves."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def register_manifest(
    store: ContentStore,
    manifest_digest: str,
    *,
    fetch: Callable[[dict[str, Any]], None] | None = None,
    extra: dict[str, Any] | None = None,
) -> ImageRecord:
    """Turn manifest ``manifest_digest`` (in the store) into an image record.

    ``fetch(descriptor)`` is called for the config and each layer blob before it is used
    (a registry pull fetches there; a local import has them already). Every layer is
    unpacked and its DiffID checked against the config's ``rootfs.diff_ids``.
    """
    manifest = parse_json(store.read_blob(manifest_digest), f"manifest {manifest_digest}")
    if media_type_of(manifest) not in MANIFESTS:
        raise ImageError(
            f"manifest {manifest_digest}: unsupported media type {manifest.get('mediaType')!r}"
        )
    config_desc = manifest.get("config")
    layers = manifest.get("layers")
    if not isinstance(config_desc, dict) or not isinstance(layers, list):
        raise ImageError(f"manifest {manifest_digest}: missing config or layers")
    config_digest = dg.validate(config_desc.get("digest"), "manifest config.digest")
    if fetch is not None:
        fetch(config_desc)
    config = store.read_json(config_digest)
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise ImageError(f"config {config_digest}: missing rootfs.diff_ids")
    if len(diff_ids) != len(layers):
        raise ImageError(
            f"manifest {manifest_digest}: {len(layers)} layers "
            f"but {len(diff_ids)} diff_ids in the config"
        )
    records = []
    for index, (desc, diff_id) in enumerate(zip(layers, diff_ids, strict=True)):
        if not isinstance(desc, dict):
            raise ImageError(f"manifest {manifest_digest}: layers[{index}] is not an object")
        media = str(desc.get("mediaType", OCI_LAYER_GZIP))
        if media not in LAYERS:
            raise ImageError(
                f"manifest {manifest_digest}: layers[{index}] has unsupported media type {media!r}"
            )
        record = LayerRecord(
            digest=dg.validate(desc.get("digest"), f"layers[{index}].digest"),
            media_type=media,
            size=int(desc.get("size", 0)),
            diff_id=dg.validate(diff_id, f"rootfs.diff_ids[{index}]"),
        )
        if fetch is not None:
            fetch(desc)
        store.unpack_layer(record)
        records.append(record)
    image = ImageRecord(
        manifest=manifest_digest,
        config=config_digest,
        layers=tuple(records),
        platform=platform_string(
            str(config.get("os", "linux")),
            str(config.get("architecture", "")),
            str(config.get("variant", "")),
        ),
        created=config.get("created") if isinstance(config.get("created"), str) else None,
        extra=extra or {},
    )
    store.put_image(image)
    return image


def build_manifest(
    config_digest: str, config_size: int, layers: list[LayerRecord]
) -> dict[str, Any]:
    """An OCI image manifest for a config and layers already in the store."""
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [
            {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
            for layer in layers
        ],
    }
