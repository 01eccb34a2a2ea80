"""Container logs written by gantry-shim, with real containers: the CRI format line by
line and stream by stream, pieces of long lines, rotation, and a container that writes
far more than a pipe holds while nobody reads."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import linux_support as support
import pytest
import rootfs_support as rs
from gantry.runtime import state as st
from gantry.runtime import supervisor as sv
from gantry.runtime.defaults import default_config
from gantry.runtime.launcher import Launcher
from gantry.runtime.shim import LINE_MAX, LogOptions, shim_path
from gantry.runtime.spec import load_spec

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]

APPLETS = ("head", "tr", "printf")
TIMEOUT = 60.0
RECORD = re.compile(
    rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) ([PF]) (.*)$", re.DOTALL
)


@dataclass(frozen=True)
class Record:
    time: datetime.datetime
    stream: str
    tag: str
    text: bytes


def records(path: Path) -> list[Record]:
    """Every record of a log file; a line that is not one fails the test."""
    found = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        match = RECORD.match(line)
        assert match, f"not a CRI log line: {line[:120]!r}"
        stamp = datetime.datetime.strptime(match[1].decode()[:26], "%Y-%m-%dT%H:%M:%S.%f")
        found.append(Record(stamp, match[2].decode(), match[3].decode(), match[4]))
    return found


def lines_of(found: list[Record], stream: str) -> list[bytes]:
    """The stream's lines put back together from its records (P pieces joined)."""
    lines, current = [], b""
    for record in found:
        if record.stream != stream:
            continue
        current += record.text
        if record.tag == "F":
            lines.append(current)
            current = b""
    if current:
        lines.append(current)
    return lines


@pytest.fixture(scope="module")
def launcher() -> Iterator[Launcher]:
    with Launcher.start(stderr=subprocess.DEVNULL) as started:
        yield started


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    with support.host_unchanged():
        yield


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "root"
    yield path
    leftovers = sv.list_containers(path)
    for container in leftovers:
        sv.delete(container, force=True)
    assert [c.id for c in leftovers] == [], "the test left containers behind"


@pytest.fixture
def bundle(tmp_path: Path) -> Callable[[str], Path]:
    def build(script: str) -> Path:
        directory = tmp_path / f"bundle-{uuid.uuid4().hex[:6]}"
        directory.mkdir()
        rootfs = rs.make_bundle(directory)
        for applet in APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
        config = default_config(["/bin/sh", "-c", script], "rootfs")
        (directory / "config.json").write_text(json.dumps(config))
        return directory

    return build


def _numbered_lines(count: int) -> str:
    # ash's printf is a builtin: no fork per line.
    return (
        f"i=0; while [ $i -lt {count} ]; do "
        "printf 'line %05d ..............................\\n' $i; i=$((i+1)); done"
    )


def _id() -> str:
    return f"lg-{uuid.uuid4().hex[:12]}"


def test_stdout_and_stderr_lines_in_order_per_stream(
    launcher: Launcher, root: Path, bundle: Callable[[str], Path], tmp_path: Path
) -> None:
    log = tmp_path / "c.log"
    script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; printf 'a  b\\tc\\n'"
    code = launcher.run(root, _id(), bundle(script), log=LogOptions(log))
    assert code == 0
    found = records(log)
    assert lines_of(found, "stdout") == [b"out1", b"out2", b"out3", b"out4", b"out5", b"a  b\tc"]
    assert lines_of(found, "stderr") == [b"err1", b"err2", b"err3", b"err4", b"err5"]
    assert all(record.tag == "F" for record in found)
    for stream in ("stdout", "stderr"):
        stamps = [r.time for r in found if r.stream == stream]
        assert stamps == sorted(stamps)
        assert abs(stamps[0] - datetime.datetime.utcnow()) < datetime.timedelta(minutes=5)


def test_a_long_line_is_split_into_pieces(
    launcher: Launcher, root: Path, bundle: Callable[[str], Path], tmp_path: Path
) -> None:
    log = tmp_path / "c.log"
    # 40000 x and a newline, then a last line without one.
    script = "head -c 40000 /dev/zero | tr '\\000' x; echo; printf tail"
    assert launcher.run(root, _id(), bundle(script), log=LogOptions(log)) == 0
    found = [r for r in records(log) if r.stream == "stdout"]
    assert lines_of(found, "stdout") == [b"x" * 40000, b"tail"]
    long_line = found[:-1]
    assert len(long_line) >= 3  # 40000 bytes do not fit in two records of LINE_MAX
    assert [r.tag for r in long_line] == ["P"] * (len(long_line) - 1) + ["F"]
    assert all(len(r.text) <= LINE_MAX for r in found)
    # The output ended without a newline: its last piece stays a P.
    assert (found[-1].tag, found[-1].text) == ("P", b"tail")


def test_rotation_keeps_max_files(
    launcher: Launcher, root: Path, bundle: Callable[[str], Path], tmp_path: Path
) -> None:
    log = tmp_path / "c.log"
    options = LogOptions(log, max_size=2 * LINE_MAX, max_files=2)
    # About 270 KB of records: eight rotations and more.
    script = _numbered_lines(4000)
    assert launcher.run(root, _id(), bundle(script), log=options) == 0
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("c.log"))
    assert kept == ["c.log", "c.log.1", "c.log.2"]
    files = [tmp_path / "c.log.2", tmp_path / "c.log.1", log]
    assert all(path.stat().st_size <= options.max_size for path in files)
    # Oldest first, the kept records are the last ones written, without a gap.
    text = [line for path in files for line in lines_of(records(path), "stdout")]
    numbers = [int(line.split()[1]) for line in text]
    assert numbers[-1] == 3999
    assert numbers == list(range(numbers[0], 4000))
    assert numbers[0] > 0  # the first lines were rotated away


def test_a_log_without_rotated_files_starts_over(
    launcher: Launcher, root: Path, bundle: Callable[[str], Path], tmp_path: Path
) -> None:
    log = tmp_path / "c.log"
    options = LogOptions(log, max_size=2 * LINE_MAX, max_files=0)
    script = _numbered_lines(2000)
    assert launcher.run(root, _id(), bundle(script), log=options) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("c.log")) == ["c.log"]
    assert log.stat().st_size <= options.max_size
    assert lines_of(records(log), "stdout")[-1].startswith(b"line 01999")


def test_fifty_megabytes_nobody_reads_do_not_block_the_container(
    launcher: Launcher, root: Path, bundle: Callable[[str], Path], tmp_path: Path
) -> None:
    log = tmp_path / "c.log"
    options = LogOptions(log, max_size=4 * 1024 * 1024, max_files=1)
    cid = _id()
    script = "head -c 52428800 /dev/zero; echo done >&2"
    launcher.create(root, cid, bundle(script), log=options)
    sv.start(sv.find(root, cid))
    record = sv.wait_exit(sv.find(root, cid), TIMEOUT)
    assert record is not None, "the container did not finish: blocked on its output?"
    assert record.exit_code == 0
    sv.delete(sv.find(root, cid))
    assert lines_of(records(log), "stderr") == [b"done"]
    logged = sum(len(r.text) for path in (log.with_name("c.log.1"), log) for r in records(path))
    assert 0 < logged <= 52428800


def test_the_exit_status_is_recorded_with_a_log(
    root: Path, bundle: Callable[[str], Path], tmp_path: Path
) -> None:
    # supervisor.create itself (the CLI's path), not through the launcher.
    log = tmp_path / "c.log"
    cid = _id()
    directory = bundle("echo bye; exit 7")
    spec = load_spec(directory / "config.json")
    recorded = sv.create(root, cid, bundle=directory, spec=spec, log=LogOptions(log))
    sv.start(sv.find(root, cid))
    record = sv.wait_exit(sv.find(root, cid), TIMEOUT)
    assert record is not None
    assert (record.exit_code, record.signal) == (7, 0)
    # The output was logged before the status was recorded.
    assert lines_of(records(log), "stdout") == [b"bye"]
    sv.delete(sv.find(root, cid))
    _reap_if_ours(recorded.shim_pid)
    assert st.read_exit(root / cid) is None


def _reap_if_ours(pid: int) -> None:
    # sv.create double-forks: the shim goes to the nearest subreaper, maybe this process.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def test_the_shim_refuses_a_log_without_its_fds(tmp_path: Path) -> None:
    completed = subprocess.run(
        [str(shim_path()), "1", str(tmp_path / "exit"), str(tmp_path / "log"), "0", "1"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    assert completed.returncode == 2
    assert b"fds 3 and 4 are pipes" in completed.stderr
    assert not (tmp_path / "log").exists()
