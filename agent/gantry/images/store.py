"""The content store: blobs by digest, unpacked layers, image records and references.

Layout under the store root (the agent's ``--root``)::

    blobs/sha256/<hex>         blobs as received (manifests, configs, compressed layers)
    ingest/sha256-<hex>        partial downloads, resumed where they stopped
    layers/<diff-id hex>/diff  unpacked layers (overlay lowers); layer.json beside diff/
    images/index.json          image records and references, rewritten atomically
    tmp/                       staging; anything here is garbage once no operation runs

Every blob is hashed while it is written and renamed into place only when its digest
matches, so a blob on disk is always what its name says. Unpacked layers are staged in
``tmp/`` and renamed into ``layers/`` whole. The metadata file is written to a temporary
name, fsynced and renamed. The engine owns the database; this store keeps no SQLite.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from gantry.images import digest as dg
from gantry.images.errors import DigestMismatch, ImageError, NotFound
from gantry.images.layers import AppliedLayer, apply_layer, remove_tree

_CHUNK: Final = 1 << 20
INDEX_VERSION: Final = 1


@dataclass(frozen=True)
class LayerRecord:
    """One layer of an image: its blob and what it unpacks to."""

    digest: str
    """Digest of the blob as stored (compressed or not)."""
    media_type: str
    size: int
    """Size of the blob."""
    diff_id: str
    """Digest of the uncompressed tar."""


@dataclass(frozen=True)
class ImageRecord:
    """An image in the store, keyed by its manifest digest; its id is its config digest."""

    manifest: str
    config: str
    layers: tuple[LayerRecord, ...]
    platform: str = "linux/amd64"
    created: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.config

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = [asdict(layer) for layer in self.layers]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageRecord:
        return cls(
            manifest=data["manifest"],
            config=data["config"],
            layers=tuple(LayerRecord(**layer) for layer in data["layers"]),
            platform=data.get("platform", "linux/amd64"),
            created=data.get("created"),
            extra=data.get("extra", {}),
        )


@dataclass(frozen=True)
class GCResult:
    """What a garbage collection removed."""

    blobs: tuple[str, ...]
    layers: tuple[str, ...]
    images: tuple[str, ...]
    bytes_freed: int


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.rename(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Ingest:
    """A blob being written; resumable. Use :meth:`ContentStore.ingest` to get one."""

    def __init__(self, store: ContentStore, digest: str, size: int | None) -> None:
        self.store = store
        self.digest = digest
        self.expected_size = size
        self.path = store.root / "ingest" / f"sha256-{dg.hex_of(digest)}"
        self._hash = hashlib.sha256()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.offset = 0
        # Resume: hash what an earlier attempt already wrote.
        while chunk := os.read(self._fd, _CHUNK):
            self._hash.update(chunk)
            self.offset += len(chunk)
        if size is not None and self.offset > size:
            self.reset()

    def reset(self) -> None:
        """Throw away what was written (a server that cannot resume sends it all again)."""
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._hash = hashlib.sha256()
        self.offset = 0

    def write(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.offset += len(data)

    def commit(self) -> str:
        """Verify and move the blob into place; a wrong digest or size removes the partial."""
        got = f"sha256:{self._hash.hexdigest()}"
        if self.expected_size is not None and self.offset != self.expected_size:
            self.discard()
            raise DigestMismatch(
                f"blob {self.digest}: {self.offset} bytes received, {self.expected_size} expected"
            )
        if got != self.digest:
            self.discard()
            raise DigestMismatch(f"blob {self.digest}: content hashes to {got}")
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.rename(self.path, self.store.blob_path(self.digest))
        return got

    def close(self) -> None:
        """Keep the partial content for a later resume."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class Lease:
    """Digests protected from garbage collection while an operation runs."""

    def __init__(self, lock: threading.RLock, counts: Counter[str]) -> None:
        self._lock = lock
        self._counts = counts
        self._held: set[str] = set()

    def add(self, digest: str) -> None:
        with self._lock:
            if digest not in self._held:
                self._held.add(digest)
                self._counts[digest] += 1

    def release(self) -> None:
        with self._lock:
            for digest in self._held:
                self._counts[digest] -= 1
                if self._counts[digest] <= 0:
                    del self._counts[digest]
            self._held.clear()


class ContentStore:
    """Blobs, layers, image records and references under ``root``; thread-safe."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        for sub in ("blobs/sha256", "ingest", "layers", "images", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._leases: Counter[str] = Counter()
        self._index_path = self.root / "images" / "index.json"

    # --- blobs ---------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / dg.hex_of(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def blob_size(self, digest: str) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the store") from None

    def read_blob(self, digest: str, limit: int = 16 << 20) -> bytes:
        """A (small) blob's content: manifests, configs, indexes."""
        path = self.blob_path(digest)
        try:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the store") from None
        if len(data) > limit:
            raise ImageError(f"blob {digest} is larger than {limit} bytes")
        return data

    def read_json(self, digest: str) -> dict[str, Any]:
        try:
            value = json.loads(self.read_blob(digest))
        except ValueError as exc:
            raise ImageError(f"blob {digest} is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ImageError(f"blob {digest} is not a JSON object")
        return value

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        digest = dg.of_bytes(data)
        if expected is not None and expected != digest:
            raise DigestMismatch(f"blob {expected}: content hashes to {digest}")
        if not self.has_blob(digest):
            tmp = self.root / "tmp" / f"blob-{secrets.token_hex(8)}"
            tmp.write_bytes(data)
            os.rename(tmp, self.blob_path(digest))
        return digest

    def put_stream(self, read: Any, expected: str | None = None, limit: int | None = None) -> str:
        """Store what ``read(n)`` returns until it returns b"" and return its digest."""
        tmp = self.root / "tmp" / f"blob-{secrets.token_hex(8)}"
        hasher = hashlib.sha256()
        total = 0
        try:
            with open(tmp, "wb") as out:
                while chunk := read(_CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    total += len(chunk)
                    if limit is not None and total > limit:
                        raise ImageError(f"blob larger than {limit} bytes")
            digest = f"sha256:{hasher.hexdigest()}"
            if expected is not None and digest != expected:
                raise DigestMismatch(f"blob {expected}: content hashes to {digest}")
            os.rename(tmp, self.blob_path(digest))
        finally:
            tmp.unlink(missing_ok=True)
        return digest

    def put_file(self, path: Path, expected: str | None = None) -> str:
        with open(path, "rb") as f:
            return self.put_stream(f.read, expected)

    def ingest(self, digest: str, size: int | None = None) -> Ingest:
        """A resumable writer for blob ``digest`` (its ``offset`` says how much is there)."""
        dg.validate(digest)
        return Ingest(self, digest, size)

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Serialise work on one key (a digest being fetched or unpacked): concurrent pulls
        of a shared layer fetch it once, the others wait and then find it there."""
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            yield

    @contextlib.contextmanager
    def lease(self) -> Iterator[Lease]:
        """Digests added to the yielded lease are kept by :meth:`gc` until the block ends
        (a pull in progress holds blobs no image references yet)."""
        held = Lease(self._lock, self._leases)
        try:
            yield held
        finally:
            held.release()

    # --- layers --------------------------------------------------------------------------

    def layer_dir(self, diff_id: str) -> Path:
        """The unpacked layer (the directory overlay uses as a lower)."""
        return self.root / "layers" / dg.hex_of(diff_id) / "diff"

    def has_layer(self, diff_id: str) -> bool:
        return self.layer_dir(diff_id).is_dir()

    def unpack_layer(self, layer: LayerRecord) -> Path:
        """Unpack ``layer``'s blob (once, however many images share it) and return its dir.

        The tar is applied to a staging directory under ``tmp/`` and renamed into place
        only when it applied completely and its DiffID matched: a failed layer leaves
        nothing behind.
        """
        with self.exclusive(f"layer:{layer.diff_id}"):
            final = self.layer_dir(layer.diff_id)
            if final.is_dir():
                return final
            blob = self.blob_path(layer.digest)
            if not blob.is_file():
                raise NotFound(f"layer blob {layer.digest} is not in the store")
            stage = self.root / "tmp" / f"layer-{secrets.token_hex(8)}"
            (stage / "diff").mkdir(parents=True)
            try:
                applied = apply_layer(
                    blob,
                    stage / "diff",
                    expected_diff_id=layer.diff_id,
                    blob_digest=layer.digest,
                )
                meta = _layer_meta(layer, applied)
                (stage / "layer.json").write_text(json.dumps(meta, indent=1))
                os.rename(stage, final.parent)
            except BaseException:
                remove_tree(stage)
                raise
            return final

    def add_layer_from_dir(self, diff_id: str, stage: Path, meta: dict[str, Any]) -> Path:
        """Adopt a staged ``stage/diff`` tree as layer ``diff_id`` (used by commit)."""
        with self.exclusive(f"layer:{diff_id}"):
            final = self.layer_dir(diff_id)
            if final.is_dir():
                remove_tree(stage)
                return final
            (stage / "layer.json").write_text(json.dumps(meta, indent=1))
            os.rename(stage, final.parent)
            return final

    def layers(self) -> list[str]:
        """DiffIDs of the unpacked layers."""
        return sorted(f"sha256:{p.name}" for p in (self.root / "layers").iterdir() if p.is_dir())

    # --- image records and references ----------------------------------------------------

    @contextlib.contextmanager
    def _index(self, write: bool) -> Iterator[dict[str, Any]]:
        with self._lock:
            lock_fd = os.open(
                self.root / "images" / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
                try:
                    index = json.loads(self._index_path.read_text())
                except FileNotFoundError:
                    index = {"version": INDEX_VERSION, "images": {}, "refs": {}}
                yield index
                if write:
                    write_atomic(
                        self._index_path, json.dumps(index, indent=1, sort_keys=True).encode()
                    )
            finally:
                os.close(lock_fd)

    def put_image(self, record: ImageRecord) -> None:
        with self._index(write=True) as index:
            index["images"][record.manifest] = record.to_json()

    def images(self) -> list[ImageRecord]:
        with self._index(write=False) as index:
            return [ImageRecord.from_json(v) for v in index["images"].values()]

    def get_image(self, key: str) -> ImageRecord:
        """The image whose manifest digest, config digest (id) or unique id prefix is ``key``."""
        with self._index(write=False) as index:
            return _find(index, key)

    def refs(self) -> dict[str, str]:
        with self._index(write=False) as index:
            return dict(index["refs"])

    def set_ref(self, name: str, manifest: str) -> None:
        dg.validate(manifest, "manifest")
        with self._index(write=True) as index:
            if manifest not in index["images"]:
                raise NotFound(f"no image with manifest {manifest}")
            index["refs"][name] = manifest

    def remove_ref(self, name: str) -> str:
        with self._index(write=True) as index:
            try:
                return str(index["refs"].pop(name))
            except KeyError:
                raise NotFound(f"no image reference {name!r}") from None

    def remove_image(self, key: str) -> ImageRecord:
        """Forget an image record and every reference to it (blobs go at the next gc)."""
        with self._index(write=True) as index:
            record = _find(index, key)
            del index["images"][record.manifest]
            index["refs"] = {k: v for k, v in index["refs"].items() if v != record.manifest}
            return record

    # --- garbage collection --------------------------------------------------------------

    def gc(self, extra_roots: Iterable[str] = (), *, keep_partial: bool = False) -> GCResult:
        """Remove what nothing references.

        Roots are the references plus ``extra_roots`` (image ids or manifest digests the
        caller still needs, such as those of existing containers). Unreferenced image
        records, blobs and unpacked layers go, as do partial ingests unless
        ``keep_partial``. Blobs held by a :meth:`lease` stay.
        """
        extra = set(extra_roots)
        with self._index(write=True) as index:
            live_blobs: set[str] = set(self._leases)
            live_layers: set[str] = set(self._leases)
            dropped = []
            tagged = set(index["refs"].values())
            for manifest, data in list(index["images"].items()):
                record = ImageRecord.from_json(data)
                if manifest in tagged or manifest in extra or record.config in extra:
                    live_blobs.update({record.manifest, record.config})
                    live_blobs.update(layer.digest for layer in record.layers)
                    live_layers.update(record.diff_ids)
                    live_blobs.update(record.extra.get("blobs", []))
                else:
                    dropped.append(manifest)
                    del index["images"][manifest]
            freed = 0
            blobs = []
            for path in sorted((self.root / "blobs" / "sha256").iterdir()):
                digest = f"sha256:{path.name}"
                if digest not in live_blobs:
                    freed += path.stat().st_size
                    path.unlink()
                    blobs.append(digest)
            layers = []
            for path in sorted((self.root / "layers").iterdir()):
                diff_id = f"sha256:{path.name}"
                if diff_id not in live_layers:
                    remove_tree(path)
                    layers.append(diff_id)
            if not keep_partial:
                for path in (self.root / "ingest").iterdir():
                    if path.name.removeprefix("sha256-") not in {d[7:] for d in self._leases}:
                        path.unlink(missing_ok=True)
        return GCResult(tuple(blobs), tuple(layers), tuple(dropped), freed)


def _find(index: dict[str, Any], key: str) -> ImageRecord:
    images: dict[str, Any] = index["images"]
    if key in images:
        return ImageRecord.from_json(images[key])
    if key in index["refs"]:
        return ImageRecord.from_json(images[index["refs"][key]])
    bare = key.removeprefix("sha256:")
    found = [
        data
        for manifest, data in images.items()
        if data["config"] == key
        or (
            len(bare) >= 12
            and (data["config"][7:].startswith(bare) or manifest[7:].startswith(bare))
        )
    ]
    if len(found) == 1:
        return ImageRecord.from_json(found[0])
    if len(found) > 1 and len({d["config"] for d in found}) == 1:
        return ImageRecord.from_json(found[0])
    if found:
        raise ImageError(f"image id {key!r} is ambiguous")
    raise NotFound(f"no image {key!r}")


def _layer_meta(layer: LayerRecord, applied: AppliedLayer) -> dict[str, Any]:
    return {
        "diff_id": applied.diff_id,
        "blob": layer.digest,
        "size": applied.size,
        "entries": applied.entries,
        "compression": applied.compression,
    }
