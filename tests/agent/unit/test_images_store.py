"""The content store: verified atomic blobs, resumable ingests, references, shared layers
stored once, and garbage collection that removes only what nothing references."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gantry.images import formats
from gantry.images.errors import DigestMismatch, ImageError, NotFound
from gantry.images.store import ContentStore, LayerRecord, write_atomic
from images_support import Member, oci_layout, sha, tar_bytes


def _blobs(store: ContentStore) -> set[str]:
    return {f"sha256:{p.name}" for p in (store.root / "blobs" / "sha256").iterdir()}


def test_put_bytes_verifies_the_digest(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(DigestMismatch, match="hashes to"):
        store.put_bytes(b"payload", expected=sha(b"something else"))
    assert _blobs(store) == set()
    digest = store.put_bytes(b"payload", expected=sha(b"payload"))
    assert store.read_blob(digest) == b"payload"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_put_stream_wrong_digest_leaves_no_blob_and_no_temp(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(DigestMismatch):
        store.put_stream(io.BytesIO(b"x" * 3_000_000).read, expected=sha(b"y"))
    assert _blobs(store) == set()
    assert list((tmp_path / "tmp").iterdir()) == []
    digest = store.put_stream(io.BytesIO(b"x" * 3_000_000).read)
    assert digest == sha(b"x" * 3_000_000)


def test_put_stream_limit(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(ImageError, match="larger than"):
        store.put_stream(io.BytesIO(b"x" * (3 << 20)).read, limit=1 << 20)
    assert _blobs(store) == set()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_ingest_resumes_and_verifies(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    data = bytes(range(256)) * 1000
    digest = sha(data)
    first = store.ingest(digest, len(data))
    first.write(data[:1000])
    first.close()  # the connection dropped
    again = store.ingest(digest, len(data))
    assert again.offset == 1000
    again.write(data[1000:])
    assert again.commit() == digest
    assert store.read_blob(digest) == data
    assert list((tmp_path / "ingest").iterdir()) == []


def test_ingest_with_wrong_content_is_discarded(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    data = b"good content"
    ingest = store.ingest(sha(data), len(data))
    ingest.write(b"evil content")
    with pytest.raises(DigestMismatch):
        ingest.commit()
    assert not store.has_blob(sha(data))
    assert list((tmp_path / "ingest").iterdir()) == []


def test_ingest_with_wrong_size_is_discarded(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    ingest = store.ingest(sha(b"abc"), 5)
    ingest.write(b"abc")
    with pytest.raises(DigestMismatch, match="3 bytes received, 5 expected"):
        ingest.commit()
    assert list((tmp_path / "ingest").iterdir()) == []


def test_bad_digest_is_refused(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(ImageError, match="not a sha256 digest"):
        store.ingest("sha256:../../etc/passwd")
    with pytest.raises(ImageError, match="not a sha256 digest"):
        store.blob_path("md5:abc")


def test_write_atomic_replaces_whole(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    target.write_text("old")
    write_atomic(target, b"new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]


def _import(store: ContentStore, tmp_path: Path, name: str, layers: list[bytes]) -> str:
    layout = tmp_path / f"layout-{name.replace(':', '-')}"
    oci_layout(layout, layers)
    (imported,) = formats.import_oci_layout(store, layout, name=name)
    assert imported.tags == (f"docker.io/library/{name}:latest",)
    return imported.image.manifest


BASE = tar_bytes([Member("bin", "dir", mode=0o755), Member("bin/tool", data=b"base" * 1000)])
APP_A = tar_bytes([Member("app", "dir", mode=0o755), Member("app/a", data=b"A")])
APP_B = tar_bytes([Member("app", "dir", mode=0o755), Member("app/b", data=b"B")])


def test_references(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    manifest = _import(store, tmp_path, "app", [BASE])
    # References are stored normalised, as Docker spells them in full.
    assert store.refs() == {"docker.io/library/app:latest": manifest}
    assert store.get_image("docker.io/library/app:latest").manifest == manifest
    image = store.get_image(manifest)
    assert store.get_image(image.id[7:19]).manifest == manifest
    with pytest.raises(NotFound, match="no image with manifest"):
        store.set_ref("other:1", sha(b"unknown"))
    store.set_ref("other:1", manifest)
    assert store.remove_ref("other:1") == manifest
    with pytest.raises(NotFound, match="other:1"):
        store.remove_ref("other:1")


def test_shared_base_layer_is_stored_and_unpacked_once(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    first = store.get_image(_import(store, tmp_path, "one", [BASE, APP_A]))
    second = store.get_image(_import(store, tmp_path, "two", [BASE, APP_B]))
    assert first.layers[0] == second.layers[0]
    # 3 layer blobs + 2 configs + 2 manifests: the base layer blob once.
    assert len(_blobs(store)) == 7
    for image in (first, second):
        for layer in image.layers:
            store.unpack_layer(layer)
    assert len(store.layers()) == 3
    assert (store.layer_dir(sha(BASE)) / "bin/tool").stat().st_nlink == 1


def test_gc_removes_only_unreferenced(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    first = store.get_image(_import(store, tmp_path, "one", [BASE, APP_A]))
    second = store.get_image(_import(store, tmp_path, "two", [BASE, APP_B]))
    for image in (first, second):
        for layer in image.layers:
            store.unpack_layer(layer)
    (store.root / "ingest" / "sha256-partial").write_bytes(b"half")
    assert store.gc().blobs == ()  # everything is referenced
    store.remove_ref("docker.io/library/two:latest")
    result = store.gc()
    gone = {second.manifest, second.config, sha(APP_B)}
    assert set(result.blobs) == gone
    assert result.layers == (sha(APP_B),)
    assert result.images == (second.manifest,)
    assert _blobs(store) == {first.manifest, first.config, sha(BASE), sha(APP_A)}
    assert set(store.layers()) == {sha(BASE), sha(APP_A)}
    assert list((store.root / "ingest").iterdir()) == []
    assert (store.layer_dir(sha(BASE)) / "bin/tool").exists()


def test_gc_keeps_extra_roots_and_leases(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    image = store.get_image(_import(store, tmp_path, "one", [BASE]))
    store.remove_ref("docker.io/library/one:latest")
    loose = store.put_bytes(b"being pulled")
    with store.lease() as lease:
        lease.add(loose)
        result = store.gc(extra_roots=[image.id])  # a container still uses it
        assert result.blobs == ()
    assert store.gc(extra_roots=[image.id]).blobs == (loose,)
    assert set(store.gc().blobs) == {image.manifest, image.config, sha(BASE)}


def test_concurrent_unpacks_of_a_shared_layer_unpack_it_once(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    data = tar_bytes([Member(f"f{i}", data=b"x" * 4096) for i in range(300)])
    digest = store.put_bytes(data)
    layer = LayerRecord(digest, "application/vnd.oci.image.layer.v1.tar", len(data), digest)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _n: store.unpack_layer(layer), range(8)))
    assert set(results) == {store.layer_dir(digest)}
    assert store.layers() == [digest]
    assert list((store.root / "tmp").iterdir()) == []
