"""docker save archives in the forms Docker writes: before 25 (``<id>/layer.tar``,
``<hex>.json``) and from 25 on (an OCI layout with ``manifest.json`` naming
``blobs/sha256/…``); bad archives fail naming what is wrong and import nothing."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from gantry.images import formats
from gantry.images.errors import ImageError
from gantry.images.store import ContentStore
from images_support import Member, sha, tar_bytes

LAYER1 = tar_bytes([Member("etc", "dir", mode=0o755), Member("etc/doomed", data=b"d")])
LAYER2 = tar_bytes([Member("etc", "dir", mode=0o755), Member("etc/.wh.doomed")])
CONFIG = json.dumps(
    {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(LAYER1), sha(LAYER2)]},
    }
).encode()


def _archive(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _check(store: ContentStore, imported: list[formats.Imported], tag: str) -> None:
    assert [item.tags for item in imported] == [(tag,)]
    image = imported[0].image
    assert image.diff_ids == [sha(LAYER1), sha(LAYER2)]
    assert store.read_blob(image.config) == CONFIG
    top = store.unpack_layer(image.layers[1])
    assert (top / "etc/doomed").exists()  # an overlay whiteout (a 0/0 char device)


def test_docker_save_before_25(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    manifest = [
        {
            "Config": f"{sha(CONFIG)[7:]}.json",
            "RepoTags": ["old/app:1"],
            "Layers": ["aaa/layer.tar", "bbb/layer.tar"],
        }
    ]
    archive = _archive(
        tmp_path / "old.tar",
        {
            f"{sha(CONFIG)[7:]}.json": CONFIG,
            "aaa/layer.tar": LAYER1,
            "aaa/VERSION": b"1.0",
            "bbb/layer.tar": LAYER2,
            "manifest.json": json.dumps(manifest).encode(),
            "repositories": json.dumps({"old/app": {"1": "bbb"}}).encode(),
        },
    )
    assert formats.sniff_archive(archive) == "docker"
    _check(store, formats.import_docker_archive(store, archive), "docker.io/old/app:1")


def test_docker_save_25_and_later(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    blobs = {f"blobs/sha256/{sha(data)[7:]}": data for data in (CONFIG, LAYER1, LAYER2)}
    manifest = [
        {
            "Config": f"blobs/sha256/{sha(CONFIG)[7:]}",
            "RepoTags": ["new/app:2"],
            "Layers": [f"blobs/sha256/{sha(LAYER1)[7:]}", f"blobs/sha256/{sha(LAYER2)[7:]}"],
        }
    ]
    archive = _archive(
        tmp_path / "new.tar",
        {
            **blobs,
            "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
            "manifest.json": json.dumps(manifest).encode(),
        },
    )
    _check(store, formats.import_docker_archive(store, archive), "docker.io/new/app:2")


def test_docker_save_with_a_wrong_layer_fails_and_tags_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    manifest = [{"Config": "c.json", "RepoTags": ["bad/app:1"], "Layers": ["l1.tar", "l2.tar"]}]
    archive = _archive(
        tmp_path / "bad.tar",
        {
            "c.json": CONFIG,
            "l1.tar": LAYER1,
            "l2.tar": LAYER1,  # not the layer the config names
            "manifest.json": json.dumps(manifest).encode(),
        },
    )
    with pytest.raises(ImageError):
        formats.import_docker_archive(store, archive)
    assert store.refs() == {}
    assert store.images() == []


def test_docker_save_missing_member_is_named(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    manifest = [{"Config": "c.json", "RepoTags": [], "Layers": ["l1.tar", "missing.tar"]}]
    archive = _archive(
        tmp_path / "bad.tar",
        {"c.json": CONFIG, "l1.tar": LAYER1, "manifest.json": json.dumps(manifest).encode()},
    )
    with pytest.raises(ImageError, match=r"missing\.tar"):
        formats.import_docker_archive(store, archive)
