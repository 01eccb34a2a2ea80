"""The pure parts of registries and multi-platform images: platform names and choice
(arm variants), when plain HTTP is allowed, multi-platform archives, OCI layout save and
load round trips, and ``remove`` refusing images containers use."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from gantry.images import oci
from gantry.images.errors import ImageError, ImageInUse, NotFound, RegistryError
from gantry.images.registry import RegistryClient, RegistryOptions, plain_http_allowed
from gantry.images.service import ImageService
from gantry.images.store import ContentStore
from images_support import Member, oci_layout, sha, tar_bytes, write_blob


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", ("linux", "amd64", "")),
        ("linux/x86_64", ("linux", "amd64", "")),
        ("linux/arm64/v8", ("linux", "arm64", "")),
        ("linux/aarch64", ("linux", "arm64", "")),
        ("linux/arm/v7", ("linux", "arm", "v7")),
        ("Linux/ARM/V6", ("linux", "arm", "v6")),
        (("linux", "s390x", ""), ("linux", "s390x", "")),
        (None, None),
    ],
)
def test_parse_platform(text: Any, expected: Any) -> None:
    assert oci.parse_platform(text) == expected


@pytest.mark.parametrize("bad", ["linux", "linux/", "a/b/c/d", "linux/amd 64", "/amd64", 5])
def test_bad_platform_names_the_field(bad: Any) -> None:
    with pytest.raises(ImageError, match=r"^platform: "):
        oci.parse_platform(bad)


def _desc(arch: str, variant: str = "", os_name: str = "linux") -> dict[str, Any]:
    platform = {"os": os_name, "architecture": arch}
    if variant:
        platform["variant"] = variant
    return {"digest": f"{arch}{variant}", "platform": platform}


INDEX = {
    "manifests": [
        _desc("amd64"),
        _desc("arm64", "v8"),
        _desc("arm", "v6"),
        _desc("arm", "v7"),
        _desc("amd64", os_name="windows"),
    ]
}


@pytest.mark.parametrize(
    ("want", "picked"),
    [
        (("linux", "amd64", ""), "amd64"),
        (("linux", "arm64", ""), "arm64v8"),
        (("linux", "arm64", "v8"), "arm64v8"),
        (("linux", "arm", "v7"), "armv7"),
        (("linux", "arm", "v6"), "armv6"),
    ],
)
def test_pick_platform(want: tuple[str, str, str], picked: str) -> None:
    assert oci.pick_platform(INDEX, want)["digest"] == picked


def test_arm_runs_older_variants_preferring_the_newest() -> None:
    index = {"manifests": [_desc("arm", "v5"), _desc("arm", "v6")]}
    assert oci.pick_platform(index, ("linux", "arm", "v7"))["digest"] == "armv6"
    newer_only = {"manifests": [_desc("arm", "v7")]}
    with pytest.raises(NotFound, match=r"linux/arm/v6 .*the index has: linux/arm/v7"):
        oci.pick_platform(newer_only, ("linux", "arm", "v6"))


def test_arm64_without_a_variant_is_v8() -> None:
    index = {"manifests": [_desc("amd64"), _desc("arm64")]}
    assert oci.pick_platform(index, ("linux", "arm64", "v8"))["digest"] == "arm64"


def test_missing_platform_lists_what_the_index_has() -> None:
    attestation = _desc("unknown", os_name="unknown")  # BuildKit's, not an image
    index = {"manifests": [*INDEX["manifests"], attestation]}
    with pytest.raises(NotFound) as caught:
        oci.pick_platform(index, ("linux", "riscv64", ""), what="example.com/app:1")
    assert str(caught.value) == (
        "example.com/app:1: no image for platform linux/riscv64 (the index has: "
        "linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64/v8, windows/amd64)"
    )


def test_host_platform_is_the_default() -> None:
    os_name, arch, variant = oci.host_platform_tuple()
    index = {"manifests": [_desc("other"), _desc(arch, variant, os_name)]}
    assert oci.pick_platform(index)["digest"] == f"{arch}{variant}"


@pytest.mark.parametrize(
    ("registry", "insecure", "allowed"),
    [
        ("127.0.0.1:5000", set(), True),
        ("127.5.6.7", set(), True),
        ("localhost:5000", set(), True),
        ("[::1]:5000", set(), True),
        ("registry.localhost:443", set(), True),
        ("10.0.0.5:5000", set(), False),
        ("registry.example.com", set(), False),
        ("10.0.0.5:5000", {"10.0.0.5:5000"}, True),
        ("10.0.0.5:5001", {"10.0.0.5:5000"}, False),
        ("10.0.0.5:5001", {"10.0.0.5"}, True),
        ("[fd00::5]:5000", {"[fd00::5]"}, True),
        ("[fd00::5]:5000", set(), False),
    ],
)
def test_plain_http_only_for_loopback_or_insecure(
    registry: str, insecure: set[str], allowed: bool
) -> None:
    assert plain_http_allowed(registry, insecure) is allowed


def test_plain_http_connection_to_a_non_loopback_registry_is_refused(tmp_path: Path) -> None:
    """Decided before any connection is made (nothing is sent to 10.0.0.5)."""
    client = RegistryClient(ContentStore(tmp_path / "store"))
    with pytest.raises(RegistryError, match=r"registry 10\.0\.0\.5:5000: plain HTTP"):
        client._connect("http", "10.0.0.5:5000", "10.0.0.5:5000")
    insecure = RegistryClient(
        ContentStore(tmp_path / "store"), RegistryOptions(insecure=frozenset({"10.0.0.5:5000"}))
    )
    conn = insecure._connect("http", "10.0.0.5:5000", "10.0.0.5:5000")
    assert conn.sock is None  # built, not connected
    conn.close()


def test_tls_is_verified_unless_the_registry_is_named_insecure(tmp_path: Path) -> None:
    options = RegistryOptions(insecure=frozenset({"10.0.0.5"}))
    client = RegistryClient(ContentStore(tmp_path / "store"), options)
    assert client._ssl_context("10.0.0.5:5000").verify_mode == ssl.CERT_NONE
    for verified in ("10.0.0.6:5000", "127.0.0.1:5000", "registry.example.com"):
        context = client._ssl_context(verified)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    missing = RegistryClient(
        ContentStore(tmp_path / "store"),
        RegistryOptions(ca_files={"r.example.com": tmp_path / "nope.pem"}),
    )
    with pytest.raises(RegistryError, match=r"^ca_files: cannot load .*nope\.pem"):
        missing._ssl_context("r.example.com")


# --- multi-platform archives -------------------------------------------------------------


def _platform_image(layout: Path, arch: str, variant: str = "") -> dict[str, Any]:
    layer = tar_bytes([Member("arch", data=f"{arch}{variant}\n".encode())])
    write_blob(layout, layer)
    config: dict[str, Any] = {
        "architecture": arch,
        "os": "linux",
        "config": {"Labels": {"arch": arch + variant}},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
    }
    if variant:
        config["variant"] = variant
    cfg = write_blob(layout, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": oci.OCI_CONFIG, **cfg},
        "layers": [{"mediaType": oci.OCI_LAYER, "digest": sha(layer), "size": len(layer)}],
    }
    desc = write_blob(layout, json.dumps(manifest).encode())
    platform = {"os": "linux", "architecture": arch} | ({"variant": variant} if variant else {})
    return {"mediaType": oci.OCI_MANIFEST, **desc, "platform": platform}


def _write_index(layout: Path, entries: list[dict[str, Any]]) -> None:
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))


def _label(service: ImageService, image: Any) -> str:
    return str(service.config(image)["config"]["Labels"]["arch"])


def test_flattened_platform_entries_in_index_json_count_as_one_image(tmp_path: Path) -> None:
    """Some tools list each platform's manifest in index.json under one name."""
    layout = tmp_path / "layout"
    named = {"annotations": {oci.REF_NAME: "example.com/multi:1"}}
    entries = [
        _platform_image(layout, "amd64") | named,
        _platform_image(layout, "arm", "v7") | named,
    ]
    _write_index(layout, entries)
    service = ImageService(tmp_path / "store")
    (imported,) = service.load(layout, platform="linux/arm/v7")
    assert _label(service, imported.image) == "armv7"
    assert imported.tags == ("example.com/multi:1",)
    with pytest.raises(NotFound, match=r"linux/amd64, linux/arm/v7"):
        service.load(layout, platform="linux/ppc64le")


def test_docker_archive_with_a_multi_platform_index(tmp_path: Path) -> None:
    """Docker 25+ with the containerd store saves an index beside manifest.json."""
    layout = tmp_path / "archive"
    amd = _platform_image(layout, "amd64")
    arm = _platform_image(layout, "arm64", "v8")
    index = write_blob(
        layout,
        json.dumps(
            {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [amd, arm]}
        ).encode(),
    )
    entry = {
        "mediaType": oci.OCI_INDEX,
        **index,
        "annotations": {
            "io.containerd.image.name": "docker.io/library/multi:latest",
            oci.REF_NAME: "latest",
        },
    }
    _write_index(layout, [entry])
    amd_manifest = json.loads((layout / "blobs/sha256" / amd["digest"][7:]).read_bytes())
    (layout / "manifest.json").write_text(
        json.dumps(
            [
                {
                    "Config": f"blobs/sha256/{amd_manifest['config']['digest'][7:]}",
                    "RepoTags": ["multi:latest"],
                    "Layers": [f"blobs/sha256/{amd_manifest['layers'][0]['digest'][7:]}"],
                }
            ]
        )
    )
    archive = tmp_path / "multi.tar"
    import tarfile

    with tarfile.open(archive, "w") as tar:
        for path in sorted(layout.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(layout)), recursive=False)
    service = ImageService(tmp_path / "store")
    (imported,) = service.load(archive, platform="linux/arm64")
    assert _label(service, imported.image) == "arm64v8"
    assert imported.tags == ("docker.io/library/multi:latest",)
    (amd_image,) = service.load(archive, platform="linux/amd64")
    assert _label(service, amd_image.image) == "amd64"


# --- save as an OCI layout, remove --------------------------------------------------------------


LAYER = tar_bytes([Member("etc", "dir", mode=0o755), Member("etc/hello", data=b"hi\n")])


def test_save_as_oci_layout_tar_round_trips(tmp_path: Path) -> None:
    source = ImageService(tmp_path / "source")
    oci_layout(tmp_path / "layout", [LAYER], tag="1")
    (imported,) = source.load(tmp_path / "layout", name="example.com/app")
    assert imported.tags == ("example.com/app:1",)
    archive = tmp_path / "saved.tar"
    source.save(["example.com/app:1"], archive, format="oci")
    copy = ImageService(tmp_path / "copy")
    (loaded,) = copy.load(archive)
    assert loaded.image.manifest == imported.image.manifest
    assert loaded.image.id == imported.image.id
    assert loaded.tags == ("example.com/app:1",)
    assert (copy.store.layer_dir(sha(LAYER)) / "etc/hello").read_bytes() == b"hi\n"
    # A directory layout too, and a bad format is named.
    source.save(["example.com/app:1"], tmp_path / "saved-dir", format="oci")
    assert (tmp_path / "saved-dir" / "oci-layout").is_file()
    with pytest.raises(ImageError, match=r"^format: 'zip'"):
        source.save(["example.com/app:1"], tmp_path / "x.zip", format="zip")


def test_remove_refuses_images_containers_use(tmp_path: Path) -> None:
    service = ImageService(tmp_path / "store")
    oci_layout(tmp_path / "layout", [LAYER], tag="1")
    (imported,) = service.load(tmp_path / "layout", name="example.com/app")
    image = imported.image
    with pytest.raises(ImageInUse) as caught:
        service.remove("example.com/app:1", in_use={"web": image.id, "db": "sha256:" + "0" * 64})
    assert str(caught.value) == "image 'example.com/app:1' is used by container web"
    assert caught.value.containers == ["web"]
    with pytest.raises(ImageInUse, match="used by a container"):
        service.remove("example.com/app:1", in_use=[image.manifest])
    assert service.resolve("example.com/app:1") == image  # nothing changed
    removed = service.remove("example.com/app:1", in_use={"db": "sha256:" + "0" * 64})
    assert removed.manifest == image.manifest
    assert service.store.refs() == {}
    with pytest.raises(NotFound):
        service.resolve("example.com/app:1")
