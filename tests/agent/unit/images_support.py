"""Helpers of the image tests (no tests in here): layer tars and OCI layouts built in code."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UID = os.getuid()
GID = os.getgid()


@dataclass
class Member:
    """One tar entry to write: ``kind`` is file, dir, symlink, hardlink, fifo, chr or blk."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    link: str = ""
    major: int = 0
    minor: int = 0
    uid: int = UID
    gid: int = GID
    xattrs: dict[str, str] | None = None


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
}


def tar_bytes(members: list[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar of ``members`` in order, names written exactly as given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = _TYPES[member.kind]
            info.mode = member.mode
            info.uid, info.gid = member.uid, member.gid
            info.mtime = 1_600_000_000
            info.linkname = member.link
            info.devmajor, info.devminor = member.major, member.minor
            if member.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in member.xattrs.items()}
            if member.kind == "file":
                info.size = len(member.data)
                tar.addfile(info, io.BytesIO(member.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def write_blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = sha(data)
    path = layout / "blobs" / "sha256" / digest[7:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def oci_layout(
    layout: Path, layers: list[bytes], config: dict[str, Any] | None = None, tag: str = "latest"
) -> str:
    """Write an OCI image layout of one image with ``layers`` (uncompressed tars, bottom
    first); return its manifest digest."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    layer_descs = []
    for layer in layers:
        desc = write_blob(layout, layer)
        layer_descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", **desc})
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "config": config or {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer) for layer in layers]},
    }
    cfg_desc = write_blob(layout, json.dumps(cfg).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg_desc},
        "layers": layer_descs,
    }
    man_desc = write_blob(layout, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **man_desc,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return str(man_desc["digest"])


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (relative), not following symlinks."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}
