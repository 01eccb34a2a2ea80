"""Image import: unpacking a large layer with gantry.images against `tar -x` of the same file.

A layer tar of about 290 MB is generated once (a root filesystem's mix: 20,000 small files
of 1-16 KiB in 199 directories, symlinks and hardlinks, and 12 files of 8 MiB), then each
round unpacks it into a fresh directory on the same filesystem:

- anchor: GNU `tar -x -p --same-owner` (what a user would otherwise run);
- Gantry, as the store imports a plain layer: `apply_layer` with the blob's digest already
  verified on write (it is the DiffID), so file data goes by copy_file_range(2);
- Gantry hashing the tar as it unpacks (a layer whose DiffID is checked during the unpack).

The sides alternate, so drift on the machine hits all alike. Prints the median time and
throughput of each and the ratio Gantry / tar in throughput (the goal is at least 0.8).
Nothing is asserted: this is a measurement, not a test.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "agent"))

from gantry.images.layers import apply_layer  # noqa: E402

ROUNDS = 5
SMALL_FILES = 20_000
BIG_FILES = 12
BIG_SIZE = 8 << 20


def make_layer(path: Path) -> None:
    rng = random.Random(7)
    blob = os.urandom(1 << 20)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes, size: int = 0, mode: int = 0o644, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size, info.linkname = kind, mode, size, link
            info.mtime = 1_600_000_000
            if kind == tarfile.REGTYPE:
                start = rng.randrange(0, len(blob) - size) if size < len(blob) else 0
                data = (blob * (size // len(blob) + 1))[:size] if size >= len(blob) else None
                tar.addfile(
                    info, io.BytesIO(data if data is not None else blob[start : start + size])
                )
            else:
                tar.addfile(info)

        add("usr", tarfile.DIRTYPE, mode=0o755)
        add("usr/lib", tarfile.DIRTYPE, mode=0o755)
        for d in range(1, 200):
            add(f"usr/lib/d{d:03}", tarfile.DIRTYPE, mode=0o755)
        for i in range(SMALL_FILES):
            add(f"usr/lib/d{i % 199 + 1:03}/f{i}", tarfile.REGTYPE, rng.randrange(1024, 16384))
            if i % 50 == 0:
                add(f"usr/lib/d{i % 199 + 1:03}/s{i}", tarfile.SYMTYPE, link=f"f{i}")
            if i % 97 == 0:
                add(
                    f"usr/lib/d{i % 199 + 1:03}/h{i}",
                    tarfile.LNKTYPE,
                    link=f"usr/lib/d{i % 199 + 1:03}/f{i}",
                )
        add("opt", tarfile.DIRTYPE, mode=0o755)
        for i in range(BIG_FILES):
            add(f"opt/big{i}", tarfile.REGTYPE, BIG_SIZE, mode=0o755)


def timed(fn: Callable[[Path], None], work: Path) -> float:
    target = work / "out"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    fn(target)
    elapsed = time.perf_counter() - start
    shutil.rmtree(target)
    return elapsed


def main() -> None:
    base = ROOT / ".cache"
    base.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-image-", dir=base) as tmp:
        work = Path(tmp)
        layer = work / "layer.tar"
        make_layer(layer)
        size = layer.stat().st_size
        with open(layer, "rb") as f:
            digest = f"sha256:{hashlib.file_digest(f, 'sha256').hexdigest()}"
        print(f"layer: {size / 1e6:.0f} MB, {SMALL_FILES + BIG_FILES} files; {ROUNDS} rounds")

        def tar_x(target: Path) -> None:
            cmd = ["tar", "-x", "-p", "--same-owner", "-f", str(layer), "-C", str(target)]
            subprocess.run(cmd, check=True)

        def gantry_store(target: Path) -> None:
            apply_layer(layer, target, expected_diff_id=digest, blob_digest=digest)

        def gantry_hashing(target: Path) -> None:
            applied = apply_layer(layer, target, expected_diff_id=digest)
            assert applied.diff_id == digest

        sides = {
            "tar -x": tar_x,
            "gantry (store)": gantry_store,
            "gantry (hashing)": gantry_hashing,
        }
        times: dict[str, list[float]] = {name: [] for name in sides}
        for fn in sides.values():  # warm-up, not measured
            timed(fn, work)
        for _round in range(ROUNDS):
            for name, fn in sides.items():
                times[name].append(timed(fn, work))
        anchor = statistics.median(times["tar -x"])
        for name in sides:
            median = statistics.median(times[name])
            print(
                f"{name:18} median {median * 1000:7.0f} ms  {size / median / 1e6:7.0f} MB/s  "
                f"throughput vs tar: {anchor / median:.2f}x"
            )
        print("goal: gantry (store) at least 0.8x tar's throughput")


if __name__ == "__main__":
    main()
