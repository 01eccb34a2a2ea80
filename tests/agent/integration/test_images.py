"""Images on the real kernel: umoci-built OCI images, skopeo docker archives, rootfs
tarballs and a docker-registry on loopback, imported by gantry.images, mounted as overlay
snapshots and run by gantry-runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import registry_support
import rootfs_support as rs
from gantry.images.service import ImageService
from gantry.images.store import ImageRecord
from gantry.runtime.defaults import default_config

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
    pytest.mark.skipif(shutil.which("umoci") is None, reason="needs umoci (make setup)"),
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo (make setup)"),
]

RUNTIME = Path(sys.executable).parent / "gantry-runtime"
APPLETS = ("sh", "cat", "ls", "echo", "test", "touch", "rm", "mkdir")


def _run(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120, **kwargs)


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    yield


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ImageService]:
    """An image service with its own root; every snapshot it made is unmounted after."""
    svc = ImageService(tmp_path / "images")
    try:
        yield svc
    finally:
        for container_id in svc.snapshots.list():
            svc.remove_rootfs(container_id)


@pytest.fixture
def oci_layout(tmp_path: Path) -> Path:
    """An OCI layout built by umoci: ``base`` is a busybox rootfs with /etc/doomed and
    /opt/replaced/{a,b}; ``v2`` adds a layer deleting /etc/doomed and replacing
    /opt/replaced by a directory holding only ``c``."""
    layout = tmp_path / "layout"
    _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", f"{layout}:base")
    bundle = tmp_path / "bundle-base"
    _run("umoci", "unpack", "--image", f"{layout}:base", str(bundle))
    rootfs = bundle / "rootfs"
    for sub in ("bin", "etc", "opt/replaced", "proc", "sys", "dev", "tmp"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(rs.BUSYBOX, rootfs / "bin/busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc/doomed").write_text("doomed\n")
    (rootfs / "etc/kept").write_text("kept\n")
    (rootfs / "opt/replaced/a").write_text("a\n")
    (rootfs / "opt/replaced/b").write_text("b\n")
    _run("umoci", "repack", "--image", f"{layout}:base", str(bundle))
    bundle2 = tmp_path / "bundle-v2"
    _run("umoci", "unpack", "--image", f"{layout}:base", str(bundle2))
    rootfs2 = bundle2 / "rootfs"
    (rootfs2 / "etc/doomed").unlink()
    shutil.rmtree(rootfs2 / "opt/replaced")
    (rootfs2 / "opt/replaced").mkdir()
    (rootfs2 / "opt/replaced/c").write_text("c\n")
    _run("umoci", "repack", "--image", f"{layout}:v2", str(bundle2))
    _run("umoci", "config", "--image", f"{layout}:v2", "--config.cmd", "/bin/sh")
    for path in (bundle, bundle2):
        shutil.rmtree(path)
    return layout


CHECK = (
    "test ! -e /etc/doomed && echo doomed-gone; cat /etc/kept; ls /opt/replaced; cat /etc/hostname"
)
EXPECTED = "doomed-gone\nkept\nc\nimgtest\n"


def _run_container(
    tmp_path: Path, service: ImageService, image: ImageRecord, script: str
) -> tuple[int, str, str]:
    """Mount ``image``'s snapshot, run ``sh -c script`` in it with gantry-runtime, return
    (exit status, stdout, stderr); the snapshot stays (the caller may commit it)."""
    container_id = f"img-{uuid.uuid4().hex[:12]}"
    snap = service.prepare_rootfs(container_id, image, hostname="imgtest")
    bundle = tmp_path / f"bundle-{container_id}"
    bundle.mkdir()
    config = default_config(["/bin/sh", "-c", script], str(snap.rootfs))
    config["root"]["readonly"] = False
    config["hostname"] = "imgtest"
    (bundle / "config.json").write_text(json.dumps(config))
    done = subprocess.run(
        [
            str(RUNTIME),
            "--root",
            str(tmp_path / "rt"),
            "run",
            "--bundle",
            str(bundle),
            container_id,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    service.unmount_rootfs(container_id)
    return done.returncode, done.stdout, done.stderr


def test_umoci_image_with_whiteouts_imports_and_runs(
    tmp_path: Path, service: ImageService, oci_layout: Path
) -> None:
    imported = service.load(oci_layout, name="local/busybox")
    tags = {tag for item in imported for tag in item.tags}
    assert tags == {"docker.io/local/busybox:base", "docker.io/local/busybox:v2"}
    image = service.resolve("local/busybox:v2")
    assert len(image.layers) == 2
    assert service.resolve("local/busybox:base").layers[0] == image.layers[0]
    rc, out, err = _run_container(tmp_path, service, image, CHECK)
    assert (rc, out) == (0, EXPECTED), err
    # The base image still has what v2 deleted: layers are shared, never changed.
    rc, out, err = _run_container(
        tmp_path,
        service,
        service.resolve("local/busybox:base"),
        "cat /etc/doomed; ls /opt/replaced",
    )
    assert (rc, out) == (0, "doomed\na\nb\n"), err


def test_docker_archive_from_skopeo_imports_and_runs(
    tmp_path: Path, service: ImageService, oci_layout: Path
) -> None:
    archive = tmp_path / "saved.tar"
    _run("skopeo", "copy", f"oci:{oci_layout}:v2", f"docker-archive:{archive}:saved/busybox:v2")
    imported = service.load(archive)
    assert [item.tags for item in imported] == [("docker.io/saved/busybox:v2",)]
    rc, out, err = _run_container(tmp_path, service, imported[0].image, CHECK)
    assert (rc, out) == (0, EXPECTED), err


def test_saved_docker_archive_round_trips_through_skopeo(
    tmp_path: Path, service: ImageService, oci_layout: Path
) -> None:
    service.load(oci_layout, name="local/busybox")
    archive = tmp_path / "out.tar"
    service.save(["local/busybox:v2"], archive, format="docker")
    copy = tmp_path / "copy"
    _run("skopeo", "copy", f"docker-archive:{archive}", f"oci:{copy}:x")
    fresh = ImageService(tmp_path / "fresh")
    (imported,) = fresh.load(copy, name="again/busybox")
    rc, out, err = _run_container(tmp_path, fresh, imported.image, CHECK)
    for container_id in fresh.snapshots.list():
        fresh.remove_rootfs(container_id)
    assert (rc, out) == (0, EXPECTED), err


def test_rootfs_tarball_imports_and_runs(tmp_path: Path, service: ImageService) -> None:
    rootfs = tmp_path / "plain"
    for sub in ("bin", "etc", "proc", "sys", "dev", "tmp"):
        (rootfs / sub).mkdir(parents=True)
    shutil.copy2(rs.BUSYBOX, rootfs / "bin/busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc/motd").write_text("from a tarball\n")
    tarball = tmp_path / "rootfs.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(rootfs, arcname=".")
    image = service.import_rootfs(tarball, name="plain:1", config={"Cmd": ["/bin/sh"]})
    assert service.config(image)["config"]["Cmd"] == ["/bin/sh"]
    rc, out, err = _run_container(tmp_path, service, image, "cat /etc/motd")
    assert (rc, out) == (0, "from a tarball\n"), err


# --- a docker-registry on loopback ------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A docker-registry on 127.0.0.1:PORT with its own storage, stopped after."""
    if shutil.which("docker-registry") is None:
        pytest.skip("needs docker-registry (make setup)")
    with registry_support.docker_registry(tmp_path / "registry") as running:
        yield running.host


def test_pull_run_commit_push_through_a_loopback_registry(
    tmp_path: Path, service: ImageService, oci_layout: Path, registry: str
) -> None:
    _run(
        "skopeo", "copy", "--dest-tls-verify=false",
        f"oci:{oci_layout}:v2", f"docker://{registry}/test/busybox:v2",
    )  # fmt: skip
    events: list[Any] = []
    image = service.pull(f"{registry}/test/busybox:v2", progress=lambda *a: events.append(a))
    assert len(image.layers) == 2
    assert events
    rc, out, err = _run_container(tmp_path, service, image, f"{CHECK}; echo changed > /etc/new")
    assert (rc, out) == (0, EXPECTED), err
    (container_id,) = service.snapshots.list()
    committed = service.commit(container_id, image, name=f"{registry}/test/committed:1")
    assert len(committed.layers) == 3
    assert committed.layers[:2] == image.layers
    service.push(f"{registry}/test/committed:1")
    inspected = json.loads(
        _run(
            "skopeo", "inspect", "--tls-verify=false", f"docker://{registry}/test/committed:1"
        ).stdout
    )
    assert inspected["Digest"] == committed.manifest
    assert len(inspected["Layers"]) == 3
    # A fresh store pulls the pushed image back and the change is there; the init layer
    # (/etc/hostname written by the engine) is not part of the commit.
    fresh = ImageService(tmp_path / "fresh")
    pulled = fresh.pull(f"{registry}/test/committed:1")
    assert pulled.manifest == committed.manifest
    rc, out, err = _run_container(
        tmp_path, fresh, pulled, "cat /etc/new; test -s /etc/hostname || echo no-hostname"
    )
    for cid in fresh.snapshots.list():
        fresh.remove_rootfs(cid)
    assert rc == 0, err
    assert out.startswith("changed\n")
    top = fresh.store.layer_dir(pulled.layers[-1].diff_id)
    assert not (top / "etc/hostname").exists()
    assert (top / "etc/new").read_text() == "changed\n"


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_layers_from_skopeo_import_and_run(
    tmp_path: Path, service: ImageService, oci_layout: Path, compression: str
) -> None:
    copy = tmp_path / f"copy-{compression}"
    _run(
        "skopeo", "copy", "--dest-compress", "--dest-compress-format", compression,
        f"oci:{oci_layout}:v2", f"oci:{copy}:v2",
    )  # fmt: skip
    (imported,) = service.load(copy, name="packed/busybox")
    media = {layer.media_type for layer in imported.image.layers}
    assert media == {f"application/vnd.oci.image.layer.v1.tar+{compression}"}
    rc, out, err = _run_container(tmp_path, service, imported.image, CHECK)
    assert (rc, out) == (0, EXPECTED), err


def test_oci_layout_as_a_tar_imports_and_runs(
    tmp_path: Path, service: ImageService, oci_layout: Path
) -> None:
    archive = tmp_path / "layout.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(oci_layout, arcname=".")
    imported = service.load(archive, name="tarred/busybox")
    assert {tag for item in imported for tag in item.tags} == {
        "docker.io/tarred/busybox:base",
        "docker.io/tarred/busybox:v2",
    }
    rc, out, err = _run_container(tmp_path, service, service.resolve("tarred/busybox:v2"), CHECK)
    assert (rc, out) == (0, EXPECTED), err
