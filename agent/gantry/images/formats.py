"""Image archives: OCI image layouts (directory or tar), ``docker save`` archives (the
pre-25 ``<id>/layer.tar`` form and the 25+ ``blobs/sha256`` form) and plain rootfs
tarballs in; OCI layouts and docker archives out.

Archive members are never extracted to disk by name: each file goes straight into the
content store under the digest of its content, so a hostile member name cannot write
anywhere. Only then are the manifests read and their blobs found by digest.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import posixpath
import secrets
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gantry.images import digest as dg
from gantry.images import oci
from gantry.images import reference as refs
from gantry.images.errors import ImageError, NotFound
from gantry.images.layers import diff_id_of, open_tar_stream
from gantry.images.store import ContentStore, ImageRecord, LayerRecord

_SMALL: Final = 16 << 20
DEFAULT_PATH_ENV: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Imported:
    """One image an archive held, and the names it was tagged with."""

    image: ImageRecord
    tags: tuple[str, ...]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _tag(store: ContentStore, image: ImageRecord, names: list[str]) -> tuple[str, ...]:
    done = []
    for name in names:
        ref = refs.parse(name, "tag")
        store.set_ref(ref.tagged, image.manifest)
        done.append(ref.tagged)
    return tuple(done)


def _resolve_manifests(
    store: ContentStore,
    desc: dict[str, Any],
    platform: oci.Platform | None,
    what: str = "index",
) -> str:
    """Follow indexes from ``desc`` down to one image manifest digest."""
    for _depth in range(4):
        digest = dg.validate(desc.get("digest"), "manifest descriptor digest")
        doc = store.read_json(digest)
        media = oci.media_type_of(doc, str(desc.get("mediaType", "")))
        if media in oci.INDEXES:
            desc = oci.pick_platform(doc, platform, what=what)
            continue
        return digest
    raise ImageError("indexes nested too deeply")


def _is_index(store: ContentStore, desc: object) -> bool:
    if not isinstance(desc, dict):
        return False
    try:
        doc = store.read_json(dg.validate(desc.get("digest"), "manifest descriptor digest"))
    except ImageError:
        return False
    return oci.media_type_of(doc, str(desc.get("mediaType", ""))) in oci.INDEXES


_CONTAINERD_NAME: Final = "io.containerd.image.name"


def _entry_name(desc: dict[str, Any]) -> str:
    annotations = desc.get("annotations")
    if not isinstance(annotations, dict):
        return ""
    full = annotations.get(_CONTAINERD_NAME)
    if isinstance(full, str) and full:
        return full
    ref_name = annotations.get(oci.REF_NAME)
    return ref_name if isinstance(ref_name, str) else ""


def _pick_platforms(manifests: list[Any], platform: oci.Platform | None) -> list[dict[str, Any]]:
    """The entries of a layout's ``index.json`` to import: each one, except that entries
    carrying a ``platform`` under one name (a flattened multi-platform image, as some
    tools write) count as one index of which the wanted platform is taken."""
    groups: dict[str, list[dict[str, Any]]] = {}
    out: list[dict[str, Any]] = []
    for desc in manifests:
        if not isinstance(desc, dict):
            raise ImageError("index.json: a manifest descriptor is not an object")
        if isinstance(desc.get("platform"), dict):
            group = groups.setdefault(_entry_name(desc), [])
            if not group:
                out.append(desc)  # its place in the order; replaced below
            group.append(desc)
        else:
            out.append(desc)
    for name, group in groups.items():
        if len(group) > 1:
            chosen = oci.pick_platform(
                {"manifests": group}, platform, what=f"index.json {name or '(unnamed)'}"
            )
            out[out.index(group[0])] = chosen
    return out


# --- OCI image layout -------------------------------------------------------------------


def import_oci_layout(
    store: ContentStore,
    path: Path,
    *,
    name: str | None = None,
    platform: oci.Platform | None = None,
) -> list[Imported]:
    """Import every image of an OCI layout (a directory or a tar of one).

    A ``ref.name`` annotation that is only a tag (umoci and skopeo write ``latest``) is
    joined to ``name``; a full reference is used as is; ``name`` with a tag tags the only
    image.
    """
    with store.lease() as lease:
        if path.is_dir():
            layout = _read_layout_dir(store, path, lease)
        else:
            layout = _read_archive(store, path, lease)
        index = layout.get("index.json")
        if index is None:
            raise ImageError(f"{path}: no index.json (not an OCI image layout)")
        return _import_index(store, oci.parse_json(index, "index.json"), name, platform)


def _import_index(
    store: ContentStore,
    index: dict[str, Any],
    name: str | None,
    platform: oci.Platform | None,
) -> list[Imported]:
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or not manifests:
        raise ImageError("index.json: no manifests")
    chosen = _pick_platforms(manifests, platform)
    out = []
    for desc in chosen:
        ref_name = _entry_name(desc)
        digest = _resolve_manifests(store, desc, platform, f"index.json {ref_name or '(unnamed)'}")
        image = oci.register_manifest(store, digest)
        names = []
        if isinstance(ref_name, str) and ref_name:
            if "/" in ref_name or (":" in ref_name and not ref_name.startswith(":")):
                names.append(ref_name)
            elif name is not None:
                names.append(f"{refs.parse(name, 'name').name}:{ref_name}")
        elif name is not None and len(chosen) == 1:
            names.append(name)
        out.append(Imported(image, _tag(store, image, names)))
    return out


def _read_layout_dir(store: ContentStore, path: Path, lease: Any) -> dict[str, bytes]:
    layout_file = path / "oci-layout"
    if not layout_file.is_file():
        raise ImageError(f"{path}: no oci-layout file (not an OCI image layout)")
    blobs = path / "blobs" / "sha256"
    if blobs.is_dir():
        for blob in blobs.iterdir():
            digest = f"sha256:{blob.name}"
            if blob.is_file() and not blob.is_symlink():
                dg.validate(digest, f"blob file {blob}")
                lease.add(digest)
                if not store.has_blob(digest):
                    store.put_file(blob, expected=digest)
    return {
        "index.json": (path / "index.json").read_bytes(),
        "oci-layout": layout_file.read_bytes(),
    }


def _read_archive(store: ContentStore, path: Path, lease: Any) -> dict[str, bytes]:
    """Stream an archive: every regular file into the store (content-addressed); returns
    the small metadata files by name, plus ``name -> digest`` under the key ``\\0files``."""
    small: dict[str, bytes] = {}
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    try:
        tar = tarfile.open(path, mode="r|*")  # noqa: SIM115 (closed by the with below)
    except (OSError, tarfile.TarError) as exc:
        raise ImageError(f"{path}: not a readable tar archive: {exc}") from None
    with tar:
        try:
            for member in tar:
                member_name = posixpath.normpath(member.name.lstrip("/")).removeprefix("./")
                if member.issym() or member.islnk():
                    target = member.linkname
                    if member.issym():
                        target = posixpath.join(posixpath.dirname(member_name), target)
                    links[member_name] = posixpath.normpath(target.lstrip("/"))
                    continue
                if not member.isfile():
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                if member.size <= _SMALL and (
                    member_name.endswith(".json") or member_name in ("oci-layout", "repositories")
                ):
                    data = source.read()
                    small[member_name] = data
                    digest = store.put_bytes(data)
                else:
                    expected = None
                    if member_name.startswith("blobs/sha256/"):
                        expected = f"sha256:{member_name.rsplit('/', 1)[1]}"
                        dg.validate(expected, f"archive member {member_name}")
                    digest = store.put_stream(source.read, expected)
                lease.add(digest)
                files[member_name] = digest
        except tarfile.TarError as exc:
            raise ImageError(f"{path}: broken tar archive: {exc}") from None
    for link, target in links.items():
        for _hop in range(8):
            if target in files:
                files[link] = files[target]
                break
            target = links.get(target, "")
    small["\0files"] = json.dumps(files).encode()
    return small


def export_oci_layout(
    store: ContentStore, images: list[tuple[ImageRecord, str | None]], path: Path
) -> None:
    """Write ``images`` (each with an optional reference to annotate) as an OCI layout:
    a directory when ``path`` ends without ``.tar``, else a tar archive."""
    as_tar = path.suffix == ".tar"
    manifests: list[dict[str, Any]] = []
    index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": manifests}
    blobs: dict[str, Path] = {}
    for image, name in images:
        desc: dict[str, Any] = {
            "mediaType": oci.media_type_of(store.read_json(image.manifest), oci.OCI_MANIFEST),
            "digest": image.manifest,
            "size": store.blob_size(image.manifest),
        }
        if name:
            desc["annotations"] = {oci.REF_NAME: refs.parse(name, "name").familiar}
        manifests.append(desc)
        for digest in (image.manifest, image.config, *(layer.digest for layer in image.layers)):
            blobs[digest] = store.blob_path(digest)
    meta = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index).encode(),
    }
    if as_tar:
        with _atomic_tar(store, path) as tar:
            for member, data in meta.items():
                _add_bytes(tar, member, data)
            for digest, blob in blobs.items():
                tar.add(blob, arcname=f"blobs/sha256/{dg.hex_of(digest)}", recursive=False)
        return
    stage = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    (stage / "blobs" / "sha256").mkdir(parents=True)
    try:
        for member, data in meta.items():
            (stage / member).write_bytes(data)
        for digest, blob in blobs.items():
            shutil.copyfile(blob, stage / "blobs" / "sha256" / dg.hex_of(digest))
        if path.exists():
            raise ImageError(f"{path} exists")
        os.rename(stage, path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# --- docker save archives -------------------------------------------------------------------


def import_docker_archive(
    store: ContentStore, path: Path, *, platform: oci.Platform | None = None
) -> list[Imported]:
    """Import a ``docker save`` archive (either form); images are tagged with RepoTags."""
    with store.lease() as lease:
        small = _read_archive(store, path, lease)
        files: dict[str, str] = json.loads(small["\0files"])
        raw = small.get("manifest.json")
        layout_index = (
            oci.parse_json(small["index.json"], "index.json") if "index.json" in small else {}
        )
        entries_of_index = layout_index.get("manifests")
        if isinstance(entries_of_index, list) and any(
            _is_index(store, desc) for desc in entries_of_index
        ):
            # Docker 25+ (containerd store) saves multi-platform images as an index beside
            # manifest.json: take the wanted platform from it.
            return _import_index(store, layout_index, None, platform)
        if raw is None:
            if "index.json" in small:  # an OCI layout after all
                return _import_index(
                    store, oci.parse_json(small["index.json"], "index.json"), None, platform
                )
            raise ImageError(f"{path}: no manifest.json (not a docker save archive)")
        try:
            entries = json.loads(raw)
        except ValueError as exc:
            raise ImageError(f"{path}: manifest.json is not JSON: {exc}") from None
        if not isinstance(entries, list) or not entries:
            raise ImageError(f"{path}: manifest.json holds no images")
        out = []
        for number, entry in enumerate(entries):
            out.append(_import_docker_entry(store, path, files, entry, number, lease))
        return out


def _member(files: dict[str, str], name: object, what: str) -> str:
    if not isinstance(name, str):
        raise ImageError(f"manifest.json: {what} is not a path")
    key = posixpath.normpath(name.lstrip("/")).removeprefix("./")
    if key not in files:
        raise ImageError(f"manifest.json: {what} {name!r} is not in the archive")
    return files[key]


def _import_docker_entry(
    store: ContentStore,
    path: Path,
    files: dict[str, str],
    entry: object,
    number: int,
    lease: Any,
) -> Imported:
    if not isinstance(entry, dict):
        raise ImageError(f"manifest.json[{number}] is not an object")
    config_digest = _member(files, entry.get("Config"), f"[{number}].Config")
    layer_names = entry.get("Layers")
    if not isinstance(layer_names, list):
        raise ImageError(f"manifest.json[{number}].Layers is not a list")
    config = store.read_json(config_digest)
    diff_ids = (config.get("rootfs") or {}).get("diff_ids")
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layer_names):
        raise ImageError(f"{path}: image {number}: rootfs.diff_ids do not match Layers")
    layers = []
    for index, layer_name in enumerate(layer_names):
        digest = _member(files, layer_name, f"[{number}].Layers[{index}]")
        with open_tar_stream(store.blob_path(digest)) as (_fd, compression, _seekable):
            pass
        layers.append(
            LayerRecord(
                digest=digest,
                media_type=oci.LAYER_BY_COMPRESSION.get(compression, oci.OCI_LAYER),
                size=store.blob_size(digest),
                diff_id=dg.validate(diff_ids[index], f"rootfs.diff_ids[{index}]"),
            )
        )
    manifest = oci.build_manifest(config_digest, store.blob_size(config_digest), layers)
    manifest_digest = store.put_bytes(oci.canonical(manifest))
    lease.add(manifest_digest)
    image = oci.register_manifest(store, manifest_digest)
    tags = entry.get("RepoTags") or []
    if not isinstance(tags, list):
        raise ImageError(f"manifest.json[{number}].RepoTags is not a list")
    return Imported(image, _tag(store, image, [str(t) for t in tags]))


def export_docker_archive(
    store: ContentStore, images: list[tuple[ImageRecord, str | None]], path: Path
) -> None:
    """Write a ``docker save`` archive (Docker 25+ form: manifest.json, repositories,
    oci-layout, index.json, blobs/sha256; layers uncompressed, as docker save writes them)."""
    entries = []
    repositories: dict[str, dict[str, str]] = {}
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": []}
    with _atomic_tar(store, path) as tar:
        written: set[str] = set()
        for image, name in images:
            layer_paths = []
            layers = []
            for layer in image.layers:
                member = f"blobs/sha256/{dg.hex_of(layer.diff_id)}"
                layer_paths.append(member)
                if member not in written:
                    with _uncompressed(store, layer) as plain:
                        tar.add(plain, arcname=member, recursive=False)
                    written.add(member)
                layers.append(
                    LayerRecord(
                        layer.diff_id, oci.OCI_LAYER, _plain_size(store, layer), layer.diff_id
                    )
                )
            config_member = f"blobs/sha256/{dg.hex_of(image.config)}"
            if config_member not in written:
                tar.add(store.blob_path(image.config), arcname=config_member, recursive=False)
                written.add(config_member)
            manifest = oci.canonical(
                oci.build_manifest(image.config, store.blob_size(image.config), layers)
            )
            manifest_digest = dg.of_bytes(manifest)
            member = f"blobs/sha256/{dg.hex_of(manifest_digest)}"
            if member not in written:
                _add_bytes(tar, member, manifest)
                written.add(member)
            repo_tags = []
            desc: dict[str, Any] = {
                "mediaType": oci.OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
            }
            if name:
                ref = refs.parse(name, "name")
                repo_tags.append(ref.familiar)
                repo_name = ref.familiar.rsplit(":", 1)[0]
                repositories.setdefault(repo_name, {})[ref.tag or "latest"] = dg.hex_of(
                    image.layers[-1].diff_id if image.layers else image.config
                )
                desc["annotations"] = {
                    oci.REF_NAME: ref.familiar,
                    "io.containerd.image.name": str(ref),
                }
            index["manifests"].append(desc)
            entries.append({"Config": config_member, "RepoTags": repo_tags, "Layers": layer_paths})
        _add_bytes(tar, "manifest.json", json.dumps(entries).encode())
        _add_bytes(tar, "repositories", json.dumps(repositories).encode())
        _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add_bytes(tar, "index.json", json.dumps(index).encode())


def _plain_size(store: ContentStore, layer: LayerRecord) -> int:
    meta = store.layer_dir(layer.diff_id).parent / "layer.json"
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        return int(json.loads(meta.read_text())["size"])
    return diff_id_of(store.blob_path(layer.digest))[1]


@contextlib.contextmanager
def _uncompressed(store: ContentStore, layer: LayerRecord) -> Iterator[Path]:
    blob = store.blob_path(layer.digest)
    if layer.digest == layer.diff_id:
        yield blob
        return
    tmp = store.root / "tmp" / f"plain-{secrets.token_hex(8)}"
    try:
        with open_tar_stream(blob) as (fd, _compression, _seekable), open(tmp, "wb") as out:
            while chunk := os.read(fd, 1 << 20):
                out.write(chunk)
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _atomic_tar(store: ContentStore, path: Path) -> Iterator[tarfile.TarFile]:
    if path.exists():
        raise ImageError(f"{path} exists")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            yield tar
        os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    del store


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


# --- plain rootfs tarballs -------------------------------------------------------------------


def import_rootfs(
    store: ContentStore,
    path: Path,
    *,
    name: str | None = None,
    config: dict[str, Any] | None = None,
    comment: str = "",
) -> Imported:
    """Import a rootfs tarball (plain or compressed) as a one-layer image (``docker
    import``). ``config`` sets image config fields (``Cmd``, ``Env``, ``WorkingDir``…) over
    the defaults (``Env`` with a PATH, everything else empty)."""
    if not path.is_file():
        raise NotFound(f"{path}: no such file")
    with store.lease() as lease:
        blob_digest = store.put_file(path)
        lease.add(blob_digest)
        diff_id, _size, compression = diff_id_of(store.blob_path(blob_digest))
        os_name, arch, variant = oci.host_platform_tuple()
        image_config: dict[str, Any] = {"Env": [DEFAULT_PATH_ENV]}
        for key, value in (config or {}).items():
            if key not in _CONFIG_KEYS:
                raise ImageError(
                    f"config.{key}: unknown image config field "
                    f"(known: {', '.join(sorted(_CONFIG_KEYS))})"
                )
            image_config[key] = value
        created = _now()
        doc: dict[str, Any] = {
            "created": created,
            "architecture": arch,
            "os": os_name,
            "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": "gantry import", "comment": comment}],
        }
        if variant:
            doc["variant"] = variant
        config_bytes = oci.canonical(doc)
        config_digest = store.put_bytes(config_bytes)
        lease.add(config_digest)
        layer = LayerRecord(
            blob_digest,
            oci.LAYER_BY_COMPRESSION.get(compression, oci.OCI_LAYER),
            store.blob_size(blob_digest),
            diff_id,
        )
        manifest_digest = store.put_bytes(
            oci.canonical(oci.build_manifest(config_digest, len(config_bytes), [layer]))
        )
        lease.add(manifest_digest)
        image = oci.register_manifest(store, manifest_digest)
        return Imported(image, _tag(store, image, [name] if name else []))


_CONFIG_KEYS: Final = frozenset(
    (
        "User",
        "ExposedPorts",
        "Env",
        "Entrypoint",
        "Cmd",
        "Volumes",
        "WorkingDir",
        "Labels",
        "StopSignal",
        "ArgsEscaped",
        "Healthcheck",
        "OnBuild",
        "Shell",
    )
)


def sniff_archive(path: Path) -> str:
    """``oci`` (layout dir or tar), ``docker`` (docker save) or ``rootfs`` (anything else)."""
    if path.is_dir():
        return "oci"
    names: set[str] = set()
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for count, member in enumerate(tar):
                names.add(posixpath.normpath(member.name).removeprefix("./"))
                if count > 64:
                    break
    except (OSError, tarfile.TarError) as exc:
        raise ImageError(f"{path}: not a readable tar archive: {exc}") from None
    if "manifest.json" in names:
        return "docker"
    if "oci-layout" in names or "index.json" in names:
        return "oci"
    if any(n.endswith("/layer.tar") for n in names):
        return "docker"
    return "rootfs"
