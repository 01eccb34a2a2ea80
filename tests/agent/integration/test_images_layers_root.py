"""Layer apply as root: OCI whiteouts and opaque directories become overlay whiteouts that
a real overlay mount honours, devices and capabilities, and a device where a directory is
expected is refused; commit turns overlay whiteouts back into OCI form."""

from __future__ import annotations

import io
import os
import shutil
import stat
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from gantry.images import commit
from gantry.images.errors import UnsafeLayer
from gantry.images.service import ImageService
from gantry.images.snapshots import mount_overlay
from gantry.images.store import ContentStore, LayerRecord
from gantry.linux import mount as mnt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from images_support import Member, oci_layout, tar_bytes, tree

pytestmark = pytest.mark.root

# security.capability v2 for cap_net_bind_service (bit 10), permitted, effective.
CAP_NET_BIND = (
    (0x02000001).to_bytes(4, "little") + (1 << 10).to_bytes(4, "little") + bytes(4) + bytes(8)
)


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    yield


def _layer(store: ContentStore, members: list[Member]) -> Path:
    data = tar_bytes(members)
    digest = store.put_bytes(data)
    return store.unpack_layer(LayerRecord(digest, "tar", len(data), digest))


LOWER = [
    Member("etc", "dir", mode=0o755),
    Member("etc/doomed", data=b"doomed"),
    Member("etc/kept", data=b"kept"),
    Member("opt", "dir", mode=0o755),
    Member("opt/dir", "dir", mode=0o755),
    Member("opt/dir/old1", data=b"1"),
    Member("opt/dir/sub", "dir", mode=0o755),
    Member("opt/dir/sub/old2", data=b"2"),
]
UPPER = [
    Member("etc", "dir", mode=0o755),
    Member("etc/.wh.doomed"),
    # The opaque marker comes after a sibling: it still hides only the lower layers.
    Member("opt/dir", "dir", mode=0o755),
    Member("opt/dir/new", data=b"new"),
    Member("opt/dir/.wh..wh..opq"),
]


def test_whiteouts_and_opaque_dirs_under_a_real_overlay(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    lower = _layer(store, LOWER)
    upper_layer = _layer(store, UPPER)
    white = os.stat(upper_layer / "etc/doomed", follow_symlinks=False)
    assert stat.S_ISCHR(white.st_mode) and white.st_rdev == 0
    assert os.getxattr(upper_layer / "opt/dir", "trusted.overlay.opaque") == b"y"
    assert not (upper_layer / "opt/dir/.wh..wh..opq").exists()
    target, upper, work = (tmp_path / n for n in ("rootfs", "upper", "work"))
    for path in (target, upper, work):
        path.mkdir()
    mount_overlay([upper_layer, lower], upper, work, target)
    try:
        assert not (target / "etc/doomed").exists()
        assert (target / "etc/kept").read_bytes() == b"kept"
        assert sorted(os.listdir(target / "opt/dir")) == ["new"]
        # A container deletes a lower file and replaces a directory: commit writes OCI
        # whiteouts for both.
        (target / "etc/kept").unlink()
        shutil.rmtree(target / "opt/dir")
        (target / "opt/dir").mkdir()
        (target / "opt/dir/fresh").write_text("fresh")
    finally:
        mnt.umount2(str(target), mnt.UMOUNT_NOFOLLOW)
    buf = io.BytesIO()
    commit.write_upper_tar(upper, buf)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        names = {m.name.removeprefix("./") for m in tar.getmembers()}
    assert "etc/.wh.kept" in names
    assert "opt/dir/.wh..wh..opq" in names
    assert "opt/dir/fresh" in names


def test_device_where_a_directory_is_expected_is_refused(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    members = [Member("dev", "chr", major=1, minor=3), Member("dev/pwned", data=b"x")]
    data = tar_bytes(members)
    digest = store.put_bytes(data)
    with pytest.raises(UnsafeLayer, match="'dev' is not a directory"):
        store.unpack_layer(LayerRecord(digest, "tar", len(data), digest))
    assert tree(store.root / "layers") == set()
    assert tree(store.root / "tmp") == set()


def test_devices_fifos_ownership_setuid_and_capabilities(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    layer = _layer(
        store,
        [
            Member("dev", "dir", mode=0o755),
            Member("dev/null", "chr", mode=0o666, major=1, minor=3),
            Member("dev/loop9", "blk", mode=0o660, major=7, minor=9, gid=6),
            Member("run.fifo", "fifo", mode=0o620),
            Member("bin", "dir", mode=0o755),
            Member("bin/su", data=b"x", mode=0o4755, uid=0, gid=0),
            Member("bin/owned", data=b"x", mode=0o2750, uid=1234, gid=5678),
            Member(
                "bin/ping",
                data=b"x",
                mode=0o755,
                xattrs={"security.capability": CAP_NET_BIND.decode("latin-1")},
            ),
        ],
    )
    null = os.stat(layer / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1
    assert stat.S_IMODE(null.st_mode) == 0o666
    loop = os.stat(layer / "dev/loop9")
    assert stat.S_ISBLK(loop.st_mode) and (os.major(loop.st_rdev), os.minor(loop.st_rdev)) == (7, 9)
    assert loop.st_gid == 6
    assert stat.S_ISFIFO(os.stat(layer / "run.fifo").st_mode)
    assert stat.S_IMODE(os.stat(layer / "bin/su").st_mode) == 0o4755
    owned = os.stat(layer / "bin/owned")
    assert (owned.st_uid, owned.st_gid, stat.S_IMODE(owned.st_mode)) == (1234, 5678, 0o2750)
    assert os.getxattr(layer / "bin/ping", "security.capability") == CAP_NET_BIND


def test_an_image_of_130_layers_mounts(tmp_path: Path) -> None:
    # Far past what lowerdir= fits in one page at these path lengths.
    layers = [tar_bytes([Member(f"l{i:03}", data=f"{i}".encode())]) for i in range(129)]
    layers.append(tar_bytes([Member(".wh.l000"), Member("top", data=b"top")]))
    layout = tmp_path / "layout"
    oci_layout(layout, layers)
    service = ImageService(tmp_path / "store")
    (imported,) = service.load(layout, name="many")
    assert len(imported.image.layers) == 130
    snap = service.prepare_rootfs("many-layers", imported.image)
    try:
        names = sorted(os.listdir(snap.rootfs))
        assert "l000" not in names  # whited out by the top layer
        assert (snap.rootfs / "l001").read_text() == "1"
        assert (snap.rootfs / "l128").read_text() == "128"
        assert (snap.rootfs / "top").read_text() == "top"
    finally:
        service.remove_rootfs("many-layers")
    assert not service.snapshots.is_mounted("many-layers")
