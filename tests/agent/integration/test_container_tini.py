"""tini as the container's PID 1 (annotation ``org.gantry.init``) on the real kernel:
orphans are reaped, signals reach the program, and the program's status comes back; the
same containers without an init show why it is there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import linux_support as support
import pytest
import rootfs_support as rs
import runtime_cli_support as rcs
from gantry.runtime import tini

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
    pytest.mark.skipif(not Path(tini.DEFAULT_INIT).exists(), reason="needs Debian's tini"),
]

# Two orphans (subshells) that exit once the program has become a sleep that never waits.
_ORPHAN = "(until ! grep -qx sh /proc/1/comm; do :; done &)"
ORPHANS = f"{_ORPHAN}; {_ORPHAN}; exec sleep 300"


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    with support.host_unchanged():
        yield


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[rcs.Runtime]:
    with rcs.runtime_in(tmp_path) as rt:
        yield rt


def _with_init(value: str | None) -> rcs.Change:
    def change(config: dict[str, Any]) -> None:
        if value is not None:
            config["annotations"] = {tini.ANNOTATION: value}

    return change


def _pids(runtime: rcs.Runtime, cid: str) -> list[int]:
    """The container's processes, zombies too: the tree under its init (a zombie has left
    its cgroup already, so ``ps`` would not show it)."""
    init = int(runtime.state(cid)["pid"])
    found, todo = [], [init]
    while todo:
        pid = todo.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                todo.extend(int(child) for child in (task / "children").read_text().split())
            except FileNotFoundError:
                continue
    return found


def _state(pid: int) -> tuple[str, str]:
    """(state letter, command name) of ``pid``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    comm = text[text.index("(") + 1 : text.rindex(")")]
    return text.rsplit(")", 1)[1].split()[0], comm


def _settled(runtime: rcs.Runtime, cid: str) -> list[tuple[str, str]]:
    """The container's processes once only the long sleep is still running."""

    def only_the_sleep_runs() -> bool:
        running = [comm for state, comm in map(_state, _pids(runtime, cid)) if state != "Z"]
        return "sleep" in running and not {"sh", "grep"} & set(running)

    rcs.wait_for(only_the_sleep_runs, "the orphans exit")
    return [_state(pid) for pid in _pids(runtime, cid)]


@pytest.mark.parametrize("value", ["true", tini.DEFAULT_INIT])
def test_tini_reaps_orphans_and_is_pid_1(runtime: rcs.Runtime, tmp_path: Path, value: str) -> None:
    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/sh", "-c", ORPHANS], _with_init(value))
    runtime.ok("run", "-d", "-b", str(bundle), "i1")
    try:
        init = int(runtime.state("i1")["pid"])
        processes = _settled(runtime, "i1")
        cmdline = Path(f"/proc/{init}/cmdline").read_bytes().split(b"\0")[:-1]
        mounts = Path(f"/proc/{init}/mountinfo").read_text()
    finally:
        runtime.ok("delete", "--force", "i1")
    assert cmdline == [b"/dev/init", b"--", b"/bin/sh", b"-c", ORPHANS.encode()]
    assert [state for state, _comm in processes].count("Z") == 0, processes
    line = next(line for line in mounts.splitlines() if line.split()[4] == "/dev/init")
    assert "ro" in line.split()[5].split(",")  # bound read-only


def test_without_an_init_the_orphans_stay_zombies(runtime: rcs.Runtime, tmp_path: Path) -> None:
    # The control: the same program as PID 1 never waits, so its orphans stay zombies.
    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/sh", "-c", ORPHANS], _with_init(None))
    runtime.ok("run", "-d", "-b", str(bundle), "z1")
    try:
        processes = _settled(runtime, "z1")
    finally:
        runtime.ok("delete", "--force", "z1")
    assert [state for state, _comm in processes].count("Z") == 2, processes


@pytest.mark.parametrize(("value", "code"), [("true", 143), ("false", None)])
def test_sigterm_reaches_the_program_through_tini(
    runtime: rcs.Runtime, tmp_path: Path, value: str, code: int | None
) -> None:
    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/sleep", "300"], _with_init(value))
    runtime.ok("run", "-d", "-b", str(bundle), "s1")
    try:
        rcs.wait_for(
            lambda: [_state(pid)[1] for pid in _pids(runtime, "s1")][-1] == "sleep",
            "the program runs",
        )
        runtime.ok("kill", "s1", "TERM")
        if code is not None:
            assert runtime.exit_record("s1")["exit_code"] == code
            assert runtime.state("s1")["status"] == "stopped"
        else:
            # As PID 1 without a handler, sleep never sees the TERM (pid_namespaces(7)).
            assert runtime.state("s1")["status"] == "running"
    finally:
        runtime.ok("delete", "--force", "s1")


def test_a_bad_init_annotation_is_refused_clearly(runtime: rcs.Runtime, tmp_path: Path) -> None:
    plain = tmp_path / "plain-file"
    plain.write_text("not a program\n")
    plain.chmod(0o644)
    for value, fragment in (
        ("maybe", "neither"),
        ("/no/such/tini", "/no/such/tini"),
        (str(plain), "not an executable file"),
    ):
        bundle = rcs.busybox_bundle(
            tmp_path / f"bundle-{len(fragment)}", ["/bin/true"], _with_init(value)
        )
        result = runtime("run", "-b", str(bundle), "b1")
        assert result.rc == 1, result
        assert "org.gantry.init" in result.err and fragment in result.err, result
        assert not runtime.root.exists() or list(runtime.root.iterdir()) == []
