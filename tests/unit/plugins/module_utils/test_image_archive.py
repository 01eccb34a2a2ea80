# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reading which image an archive holds, for gantry.fleet.image's load and export."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest
from ansible_collections.gantry.fleet.plugins.module_utils._image_archive import (
    archive_holds,
    archive_images,
)
from ansible_collections.gantry.fleet.plugins.module_utils._registry import (
    RegistryProbe,
    is_loopback,
    split_reference,
)

CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]}}).encode()
CONFIG_ID = "sha256:" + hashlib.sha256(CONFIG).hexdigest()


def write_tar(path, files, mode="w"):
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def docker_archive(path, tags, mode="w"):
    hexdigest = CONFIG_ID.split(":")[1]
    manifest = [{"Config": hexdigest + ".json", "RepoTags": tags, "Layers": []}]
    return write_tar(
        path,
        {"manifest.json": json.dumps(manifest).encode(), hexdigest + ".json": CONFIG},
        mode,
    )


def oci_archive(path, name=None, config_digest=CONFIG_ID):
    manifest = json.dumps(
        {"schemaVersion": 2, "config": {"digest": config_digest, "size": 1}, "layers": []}
    ).encode()
    manifest_hex = hashlib.sha256(manifest).hexdigest()
    descriptor = {"digest": "sha256:" + manifest_hex, "size": len(manifest)}
    if name:
        descriptor["annotations"] = {"org.opencontainers.image.ref.name": name}
    index = {"schemaVersion": 2, "manifests": [descriptor]}
    return write_tar(
        path,
        {
            "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
            "index.json": json.dumps(index).encode(),
            "blobs/sha256/" + manifest_hex: manifest,
        },
    )


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:xz"])
def test_docker_archive_id_is_the_config_digest(tmp_path, mode):
    path = docker_archive(tmp_path / "a.tar", ["localhost:5000/app:1"], mode)
    (image,) = archive_images(path)
    assert image.id == CONFIG_ID
    assert image.names == ["localhost:5000/app:1"]


def test_docker_archive_pointing_into_an_oci_layout(tmp_path):
    manifest = [{"Config": "blobs/sha256/" + "ab" * 32, "RepoTags": None, "Layers": []}]
    path = write_tar(tmp_path / "a.tar", {"manifest.json": json.dumps(manifest).encode()})
    (image,) = archive_images(path)
    assert image.id == "sha256:" + "ab" * 32
    assert image.names == []


def test_oci_layout_id_and_name(tmp_path):
    (image,) = archive_images(oci_archive(tmp_path / "o.tar", name="app:1"))
    assert (image.id, image.names) == (CONFIG_ID, ["app:1"])


def test_archive_holds_compares_id_and_name(tmp_path):
    path = docker_archive(tmp_path / "a.tar", ["docker.io/library/busybox:latest"])
    assert archive_holds(path, CONFIG_ID)
    assert archive_holds(path, CONFIG_ID, "busybox")
    assert archive_holds(path, CONFIG_ID, "library/busybox:latest")
    assert not archive_holds(path, CONFIG_ID, "busybox:1")
    assert not archive_holds(path, "sha256:" + "0" * 64)


def test_an_unnamed_oci_image_holds_by_id(tmp_path):
    path = oci_archive(tmp_path / "o.tar")
    assert archive_holds(path, CONFIG_ID, "anything:1")


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"manifest.json": b"not json"},
        {"manifest.json": b'[{"Config": "missing.json"}]'},
        {"index.json": b'{"manifests": [{"digest": "sha256:00"}]}'},
        {"index.json": b'{"manifests": [{"digest": "sha256:../../etc/passwd"}]}'},
    ],
)
def test_what_cannot_be_read_is_unknown(tmp_path, files):
    assert archive_images(write_tar(tmp_path / "x.tar", files)) is None


def test_not_a_tar_or_missing_is_unknown(tmp_path):
    (tmp_path / "plain").write_bytes(b"hello")
    assert archive_images(tmp_path / "plain") is None
    assert archive_images(tmp_path / "nothing") is None
    assert not archive_holds(tmp_path / "nothing", CONFIG_ID)


# --- the registry probe's reference parsing (no network) ----------------------------------------


@pytest.mark.parametrize(
    "reference, parts",
    [
        ("busybox", ("registry-1.docker.io", "library/busybox", "latest")),
        ("busybox:1.36", ("registry-1.docker.io", "library/busybox", "1.36")),
        ("docker.io/team/app:2", ("registry-1.docker.io", "team/app", "2")),
        ("127.0.0.1:5000/it/busybox:1", ("127.0.0.1:5000", "it/busybox", "1")),
        ("localhost/app", ("localhost", "app", "latest")),
        ("registry.example.com/a/b/c:v1.2", ("registry.example.com", "a/b/c", "v1.2")),
        ("registry.example.com:8443/app", ("registry.example.com:8443", "app", "latest")),
        ("app@sha256:" + "0" * 64, None),
    ],
)
def test_split_reference(reference, parts):
    assert split_reference(reference) == parts


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1:5000", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("registry.example.com", False),
        ("10.0.0.1:5000", False),
    ],
)
def test_loopback_registries(host, loopback):
    assert is_loopback(host) is loopback


def test_a_registry_nobody_answers_at_is_cannot_tell():
    # Port 1 on loopback: refused at once, so "cannot tell", never "unchanged".
    assert RegistryProbe(timeout=5).tag_digest("127.0.0.1:1/it/busybox:1") is None
