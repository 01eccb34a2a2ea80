"""Layer apply without root: hostile tars are refused and leave nothing behind; links,
modes and compression come out right. (Whiteouts and devices need mknod: see the
integration tier, test_images_layers_root.py.)"""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
from pathlib import Path

import pytest
from gantry.images.errors import DigestMismatch, ImageError, UnsafeLayer
from gantry.images.layers import apply_layer, clean_name
from gantry.images.store import ContentStore, LayerRecord
from images_support import Member, sha, tar_bytes, tree


def _apply(tmp_path: Path, members: list[Member]) -> Path:
    blob = tmp_path / "layer.tar"
    blob.write_bytes(tar_bytes(members))
    target = tmp_path / "layer"
    target.mkdir()
    apply_layer(blob, target)
    return target


def _unpack_in_store(tmp_path: Path, members: list[Member]) -> tuple[ContentStore, LayerRecord]:
    store = ContentStore(tmp_path / "store")
    data = tar_bytes(members)
    digest = store.put_bytes(data)
    layer = LayerRecord(digest, "application/vnd.oci.image.layer.v1.tar", len(data), digest)
    return store, layer


def _assert_nothing_left(store: ContentStore) -> None:
    assert list((store.root / "layers").iterdir()) == []
    assert list((store.root / "tmp").iterdir()) == []


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the store that no layer may touch; a secret in it."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_text("secret\n")
    return path


HOSTILE = {
    "dotdot": lambda out: [Member("a/../../outside/pwned", data=b"x")],
    "dotdot-leading": lambda out: [Member("../outside/pwned", data=b"x")],
    "symlink-parent-abs": lambda out: [
        Member("evil", "symlink", link=str(out)),
        Member("evil/pwned", data=b"x"),
    ],
    "symlink-parent-rel": lambda out: [
        Member("d", "dir", mode=0o755),
        Member("d/evil", "symlink", link="../../../../../../.." + str(out)),
        Member("d/evil/pwned", data=b"x"),
    ],
    "symlink-parent-dir-entry": lambda out: [
        Member("evil", "symlink", link=str(out)),
        Member("evil/sub", "dir", mode=0o755),
    ],
    "hardlink-dotdot": lambda out: [Member("h", "hardlink", link="../outside/secret")],
    "hardlink-absolute": lambda out: [Member("h", "hardlink", link=str(out / "secret"))],
    "hardlink-through-symlink": lambda out: [
        Member("s", "symlink", link=str(out)),
        Member("h", "hardlink", link="s/secret"),
    ],
    "fifo-as-parent": lambda out: [Member("d", "fifo"), Member("d/pwned", data=b"x")],
    "file-as-parent": lambda out: [Member("d", data=b"f"), Member("d/pwned", data=b"x")],
    "whiteout-dotdot": lambda out: [Member("d", "dir", mode=0o755), Member("d/.wh...", data=b"")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tar_is_refused_and_leaves_nothing(
    tmp_path: Path, outside: Path, case: str
) -> None:
    store, layer = _unpack_in_store(tmp_path, HOSTILE[case](outside))
    before = tree(outside)
    with pytest.raises(UnsafeLayer) as err:
        store.unpack_layer(layer)
    assert "tar entry" in str(err.value)
    assert tree(outside) == before
    assert (outside / "secret").read_text() == "secret\n"
    assert (outside / "secret").stat().st_nlink == 1
    _assert_nothing_left(store)


def test_absolute_names_are_confined_to_the_layer(tmp_path: Path, outside: Path) -> None:
    target = _apply(tmp_path, [Member(str(outside / "pwned"), data=b"inside")])
    assert not (outside / "pwned").exists()
    assert (target / str(outside).lstrip("/") / "pwned").read_bytes() == b"inside"


def test_symlinks_are_created_never_followed(tmp_path: Path, outside: Path) -> None:
    # A symlink to outside, then a file of the same name: the link is replaced, the
    # outside file untouched.
    target = _apply(
        tmp_path,
        [
            Member("link", "symlink", link=str(outside / "secret")),
            Member("dangling", "symlink", link="/nonexistent/x"),
            Member("link", data=b"replaced"),
        ],
    )
    assert (outside / "secret").read_text() == "secret\n"
    assert not (target / "link").is_symlink()
    assert (target / "link").read_bytes() == b"replaced"
    assert os.readlink(target / "dangling") == "/nonexistent/x"


def test_hardlinks_share_the_inode(tmp_path: Path) -> None:
    target = _apply(
        tmp_path,
        [
            Member("bin", "dir", mode=0o755),
            Member("bin/busybox", data=b"ELF", mode=0o755),
            Member("bin/sh", "hardlink", link="bin/busybox"),
            Member("bin/ls", "hardlink", link="./bin/busybox"),
        ],
    )
    ino = (target / "bin/busybox").stat().st_ino
    assert (target / "bin/sh").stat().st_ino == ino
    assert (target / "bin/ls").stat().st_ino == ino
    assert (target / "bin/busybox").stat().st_nlink == 3


def test_setuid_and_modes_survive(tmp_path: Path) -> None:
    target = _apply(
        tmp_path,
        [
            Member("usr", "dir", mode=0o755),
            Member("usr/su", data=b"x", mode=0o4755),
            Member("usr/sg", data=b"x", mode=0o2711),
            Member("tmp", "dir", mode=0o1777),
            Member("private", "dir", mode=0o700),
        ],
    )
    assert stat.S_IMODE((target / "usr/su").stat().st_mode) == 0o4755
    assert stat.S_IMODE((target / "usr/sg").stat().st_mode) == 0o2711
    assert stat.S_IMODE((target / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((target / "private").stat().st_mode) == 0o700


def test_directory_times_are_set_last(tmp_path: Path) -> None:
    target = _apply(tmp_path, [Member("d", "dir", mode=0o755), Member("d/f", data=b"x")])
    assert (target / "d").stat().st_mtime == 1_600_000_000
    assert (target / "d/f").stat().st_mtime == 1_600_000_000


def test_parents_missing_from_the_tar_are_created(tmp_path: Path) -> None:
    target = _apply(tmp_path, [Member("a/b/c/file", data=b"deep")])
    assert (target / "a/b/c/file").read_bytes() == b"deep"


def test_large_file_data_is_exact(tmp_path: Path) -> None:
    data = os.urandom(3 << 20) + b"tail"
    target = _apply(tmp_path, [Member("big", data=data), Member("after", data=b"a")])
    assert (target / "big").read_bytes() == data
    assert (target / "after").read_bytes() == b"a"


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_compressed_layers_are_sniffed_and_diff_id_is_of_the_tar(
    tmp_path: Path, compress: str
) -> None:
    plain = tar_bytes([Member("etc", "dir", mode=0o755), Member("etc/motd", data=b"hi")])
    if compress == "gzip":
        packed = gzip.compress(plain)
    else:
        packed = subprocess.run(
            ["zstd", "-q", "-c"], input=plain, capture_output=True, check=True
        ).stdout
    blob = tmp_path / "layer"
    blob.write_bytes(packed)
    target = tmp_path / "out"
    target.mkdir()
    applied = apply_layer(blob, target, expected_diff_id=sha(plain))
    assert applied.compression == compress
    assert applied.diff_id == sha(plain)
    assert (target / "etc/motd").read_bytes() == b"hi"


def test_wrong_diff_id_fails_and_leaves_no_layer(tmp_path: Path) -> None:
    store, layer = _unpack_in_store(tmp_path, [Member("f", data=b"x")])
    wrong = LayerRecord(layer.digest, layer.media_type, layer.size, sha(b"other"))
    with pytest.raises(DigestMismatch, match="diff_id"):
        store.unpack_layer(wrong)
    _assert_nothing_left(store)


def test_wrong_diff_id_of_a_compressed_layer_fails(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    packed = gzip.compress(tar_bytes([Member("f", data=b"x")]))
    digest = store.put_bytes(packed)
    layer = LayerRecord(digest, "application/vnd.oci.image.layer.v1.tar+gzip", 1, sha(b"no"))
    with pytest.raises(DigestMismatch):
        store.unpack_layer(layer)
    _assert_nothing_left(store)


def test_truncated_tar_fails_cleanly(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    data = tar_bytes([Member("f", data=os.urandom(10000))])[:3000]
    digest = store.put_bytes(data)
    with pytest.raises(Exception, match="end of archive"):
        store.unpack_layer(LayerRecord(digest, "x", len(data), digest))
    _assert_nothing_left(store)


def test_unpacked_once_however_many_times_asked(tmp_path: Path) -> None:
    store, layer = _unpack_in_store(tmp_path, [Member("f", data=b"x")])
    first = store.unpack_layer(layer)
    (first / "marker").write_text("still the same dir")
    assert store.unpack_layer(layer) == first
    assert (first / "marker").exists()
    assert store.layers() == [layer.diff_id]


def test_clean_name() -> None:
    assert clean_name("./a//b/./c") == "a/b/c"
    assert clean_name("/abs/x") == "abs/x"
    assert clean_name("./") == ""
    with pytest.raises(UnsafeLayer, match=r"'\.\.'"):
        clean_name("a/../b")


# Many small files, same-name entries and failures: tar order decides, errors name the entry.


def test_small_files_in_many_directories_are_exact(tmp_path: Path) -> None:
    # More files than one batch and more directories than the parent-fd cache holds.
    members = [
        Member(f"d{i % 600}/f{i}", data=os.urandom(i % 5000), mode=0o640 | (i % 2) << 2)
        for i in range(1500)
    ]
    target = _apply(tmp_path, members)
    for member in members:
        path = target / member.name
        assert path.read_bytes() == member.data
        assert stat.S_IMODE(path.lstat().st_mode) == member.mode
        assert path.lstat().st_mtime == 1_600_000_000


def test_later_entries_of_the_same_name_win_in_tar_order(tmp_path: Path) -> None:
    target = _apply(
        tmp_path,
        [
            Member("f", data=b"first"),
            Member("f", data=b"second"),
            Member("d", "dir", mode=0o755),
            Member("d/x", data=b"inside"),
            Member("d", data=b"a file now"),
            Member("h", "hardlink", link="f"),
            Member("f", data=b"third"),
            Member("s", data=b"file"),
            Member("s", "symlink", link="f"),
        ],
    )
    assert (target / "f").read_bytes() == b"third"
    assert (target / "h").read_bytes() == b"second"
    assert (target / "d").read_bytes() == b"a file now"
    assert os.readlink(target / "s") == "f"


def test_a_small_file_that_cannot_be_created_fails_naming_it(tmp_path: Path) -> None:
    name = "x" * 300
    with pytest.raises(ImageError, match=f"tar entry '{name}'.*ENAMETOOLONG"):
        _apply(tmp_path, [Member("a", data=b"a"), Member(name, data=b"b"), Member("c", data=b"c")])
