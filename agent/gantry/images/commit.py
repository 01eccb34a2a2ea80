"""Commit: a container's upper directory becomes a new layer, config and image.

The upper directory holds overlay's form of changes; the layer gets the OCI form:
a 0/0 character device (a deleted file) becomes an empty ``.wh.<name>``, a directory
with ``trusted.overlay.opaque=y`` (its lower contents hidden) gets a ``.wh..wh..opq``
member right after it (as containerd's overlay diff does). The init layer's files
(``/etc/hosts``, ``/etc/hostname``, ``/etc/resolv.conf``) are left out.

The walk goes through directory fds (``os.fwalk``) and opens files ``O_NOFOLLOW``: a
running container may rename or plant symlinks in its upper directory meanwhile, and the
commit must read only what is inside it.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import os
import secrets
import stat
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Final

from gantry.images import oci
from gantry.images.errors import ImageError
from gantry.images.layers import OPAQUE_MARKER, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX
from gantry.images.snapshots import INIT_FILES
from gantry.images.store import ContentStore, ImageRecord, LayerRecord

_SKIP_XATTR_PREFIXES: Final = ("trusted.overlay.", "security.selinux")


class _HashingWriter:
    """A write-only file object that hashes what passes through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.out.write(data)

    def tell(self) -> int:
        return self.size


def _xattrs(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        if name.startswith(_SKIP_XATTR_PREFIXES):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        # tarfile's PAX writer takes str values; surrogateescape keeps binary values
        # (security.capability) byte-exact.
        out[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    return out


def write_upper_tar(upper: Path, out: IO[bytes], exclude: Iterable[str] = INIT_FILES) -> None:
    """Write the changes in overlay upper dir ``upper`` as an OCI layer tar to ``out``."""
    skipped = set(exclude)
    seen: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames, dirfd in os.fwalk(upper, follow_symlinks=False):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, upper)
            rel_dir = "" if rel_dir == "." else rel_dir
            dir_path = f"/proc/self/fd/{dirfd}"
            if rel_dir:
                st = os.stat(dirfd)
                tar.addfile(_info(rel_dir + "/", st, tarfile.DIRTYPE, _xattrs(dir_path)))
            try:
                opaque = os.getxattr(dir_path, OVERLAY_OPAQUE_XATTR) == b"y"
            except OSError:
                opaque = False
            if opaque and rel_dir:
                tar.addfile(_marker(f"{rel_dir}/{OPAQUE_MARKER}"))
            for name in sorted(filenames + [d for d in dirnames if _is_link(d, dirfd)]):
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if rel in skipped:
                    continue
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                mode = st.st_mode
                if stat.S_ISCHR(mode) and st.st_rdev == 0:
                    parent = f"{rel_dir}/" if rel_dir else ""
                    tar.addfile(_marker(f"{parent}{WHITEOUT_PREFIX}{name}"))
                    continue
                xattrs = _xattrs(f"{dir_path}/{name}")
                if stat.S_ISREG(mode):
                    key = (st.st_dev, st.st_ino)
                    if st.st_nlink > 1 and key in seen:
                        info = _info(rel, st, tarfile.LNKTYPE, xattrs)
                        info.linkname = seen[key]
                        tar.addfile(info)
                        continue
                    seen[key] = rel
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
                    with os.fdopen(fd, "rb") as f:
                        info = _info(rel, os.fstat(fd), tarfile.REGTYPE, xattrs)
                        tar.addfile(info, f)
                elif stat.S_ISLNK(mode):
                    info = _info(rel, st, tarfile.SYMTYPE, xattrs)
                    info.linkname = os.readlink(name, dir_fd=dirfd)
                    tar.addfile(info)
                elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                    kind = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
                    info = _info(rel, st, kind, xattrs)
                    info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                    tar.addfile(info)
                elif stat.S_ISFIFO(mode):
                    tar.addfile(_info(rel, st, tarfile.FIFOTYPE, xattrs))
                # sockets are not part of an image (tar cannot hold them either)


def _is_link(name: str, dirfd: int) -> bool:
    # fwalk lists symlinks to directories among dirnames (and does not descend them).
    return stat.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)


def _info(name: str, st: os.stat_result, kind: bytes, pax: dict[str, str]) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = st.st_mtime
    info.size = st.st_size if kind == tarfile.REGTYPE else 0
    info.pax_headers = pax
    return info


def _marker(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.REGTYPE
    info.mode = 0o644
    info.size = 0
    info.mtime = 0
    return info


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


CONFIG_CHANGE_KEYS: Final = frozenset(
    (
        "Cmd",
        "Entrypoint",
        "Env",
        "ExposedPorts",
        "Labels",
        "StopSignal",
        "User",
        "Volumes",
        "WorkingDir",
    )
)


def commit_upper(
    store: ContentStore,
    base: ImageRecord | None,
    upper: Path,
    *,
    author: str = "",
    comment: str = "",
    created_by: str = "gantry commit",
    changes: dict[str, Any] | None = None,
) -> ImageRecord:
    """Turn ``upper`` into a layer over ``base`` and store the new image (untagged)."""
    for key in changes or {}:
        if key not in CONFIG_CHANGE_KEYS:
            raise ImageError(
                f"changes.{key}: not a config field commit can set "
                f"(known: {', '.join(sorted(CONFIG_CHANGE_KEYS))})"
            )
    tmp = store.root / "tmp" / f"commit-{secrets.token_hex(8)}.tar"
    with store.lease() as lease:
        try:
            with open(tmp, "wb") as raw:
                writer = _HashingWriter(raw)
                write_upper_tar(upper, writer)  # type: ignore[arg-type]
            diff_id = f"sha256:{writer.hash.hexdigest()}"
            with open(tmp, "rb") as source:
                proc = subprocess.Popen(
                    ["gzip", "-c", "-n", "-6"], stdin=source, stdout=subprocess.PIPE
                )
                assert proc.stdout is not None
                try:
                    blob = store.put_stream(proc.stdout.read)
                finally:
                    proc.stdout.close()
                    if proc.wait() != 0:
                        raise ImageError("commit: gzip failed")
        finally:
            tmp.unlink(missing_ok=True)
        lease.add(blob)
        config = copy.deepcopy(store.read_json(base.config)) if base else _scratch_config()
        created = _now()
        config["created"] = created
        if author:
            config["author"] = author
        image_config = config.setdefault("config", {})
        for key, value in (changes or {}).items():
            image_config[key] = value
        config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"] = [
            *(base.diff_ids if base else []),
            diff_id,
        ]
        entry = {"created": created, "created_by": created_by}
        if comment:
            entry["comment"] = comment
        if author:
            entry["author"] = author
        config["history"] = [*config.get("history", []), entry]
        config_bytes = oci.canonical(config)
        config_digest = store.put_bytes(config_bytes)
        lease.add(config_digest)
        layers = [
            *(base.layers if base else ()),
            LayerRecord(blob, oci.OCI_LAYER_GZIP, store.blob_size(blob), diff_id),
        ]
        manifest_digest = store.put_bytes(
            oci.canonical(oci.build_manifest(config_digest, len(config_bytes), layers))
        )
        lease.add(manifest_digest)
        return oci.register_manifest(store, manifest_digest)


def _scratch_config() -> dict[str, Any]:
    os_name, arch, variant = oci.host_platform_tuple()
    config: dict[str, Any] = {"architecture": arch, "os": os_name, "config": {}}
    if variant:
        config["variant"] = variant
    return config
