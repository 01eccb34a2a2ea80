"""gantry.runtime.state: the status derived from crafted facts, container ids, signal names,
the recorded state and its atomic writing."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from gantry.runtime import state as st


def _facts(**changes: bool) -> st.Facts:
    values = {
        "recorded": True,
        "alive": True,
        "same_start_time": True,
        "fifo_exists": False,
        "frozen": False,
    }
    values.update(changes)
    return st.Facts(**values)


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"recorded": False}, "creating"),
        ({"recorded": False, "alive": False}, "creating"),
        ({"fifo_exists": True}, "created"),
        ({}, "running"),
        ({"frozen": True}, "paused"),
        ({"alive": False}, "stopped"),
        ({"alive": False, "fifo_exists": True}, "stopped"),
        ({"same_start_time": False}, "stopped"),  # the pid was reused by another process
        ({"same_start_time": False, "frozen": True}, "stopped"),
        ({"fifo_exists": True, "frozen": True}, "created"),
    ],
)
def test_status_is_derived_from_the_facts(changes: dict[str, bool], status: str) -> None:
    assert st.derive_status(_facts(**changes)) == status


@pytest.mark.parametrize("good", ["a", "A1", "web-1", "x_y.z", "0abc", "a" * 1024])
def test_valid_ids(good: str) -> None:
    assert st.validate_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "-a", ".a", "_a", "a/b", "..", "a b", "a\nb", "é", "a:b", "a" * 1025]
)
def test_invalid_ids_are_refused_by_name(bad: str) -> None:
    with pytest.raises(st.StateError, match="invalid container id") as caught:
        st.validate_id(bad)
    assert repr(bad) in str(caught.value)


def test_container_dir_validates_the_id(tmp_path: Path) -> None:
    assert st.container_dir(tmp_path, "c1") == tmp_path / "c1"
    with pytest.raises(st.StateError):
        st.container_dir(tmp_path, "../etc")


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("TERM", signal.SIGTERM),
        ("SIGTERM", signal.SIGTERM),
        ("term", signal.SIGTERM),
        ("sigkill", signal.SIGKILL),
        ("9", 9),
        ("15", 15),
        ("HUP", signal.SIGHUP),
        ("USR1", signal.SIGUSR1),
        ("RTMIN", signal.SIGRTMIN),
        ("SIGRTMIN+2", signal.SIGRTMIN + 2),
        ("RTMAX-1", signal.SIGRTMAX - 1),
    ],
)
def test_signals_by_name_or_number(text: str, number: int) -> None:
    assert st.parse_signal(text) == int(number)


@pytest.mark.parametrize("text", ["", "0", "1000", "NOPE", "SIG", "-9", "RTMIN+99", "RTMIN+x"])
def test_unknown_signals_are_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="unknown signal") as caught:
        st.parse_signal(text)
    assert repr(text) in str(caught.value)


def _recorded() -> st.ContainerState:
    return st.ContainerState(
        id="c1",
        pid=42,
        start_time=1234,
        bundle="/b",
        rootfs="/b/rootfs",
        created="2026-01-01T00:00:00.000000Z",
        cgroup="/gantry/c1",
        shim_pid=41,
        shim_start_time=1200,
        oci_version="1.2.1",
        annotations={"k": "v"},
    )


def test_oci_state_has_runcs_keys_and_pid_0_once_stopped() -> None:
    running = st.oci_state(_recorded(), "running")
    assert running == {
        "ociVersion": "1.2.1",
        "id": "c1",
        "pid": 42,
        "status": "running",
        "bundle": "/b",
        "rootfs": "/b/rootfs",
        "created": "2026-01-01T00:00:00.000000Z",
        "owner": "",
        "annotations": {"k": "v"},
    }
    assert st.oci_state(_recorded(), "stopped")["pid"] == 0


def test_state_round_trips_through_its_file(tmp_path: Path) -> None:
    assert st.read_state(tmp_path) is None  # not written yet: "creating"
    st.write_state(tmp_path, _recorded())
    assert st.read_state(tmp_path) == _recorded()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temp file left
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600


def test_a_malformed_state_file_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"id": "c1"}))
    with pytest.raises(st.StateError, match=r"state\.json has no 'pid'"):
        st.read_state(tmp_path)
    (tmp_path / "state.json").write_text("{")
    with pytest.raises(st.StateError, match="cannot read"):
        st.read_state(tmp_path)


def test_exit_record(tmp_path: Path) -> None:
    assert st.read_exit(tmp_path) is None
    (tmp_path / "exit.json").write_text(
        '{"pid":5,"status":15,"exit_code":143,"signal":15,"finished_ns":7}\n'
    )
    assert st.read_exit(tmp_path) == st.ExitRecord(143, 15, 7)


def test_write_atomic_replaces_the_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "pid"
    target.write_text("old and long")
    st.write_atomic(target, "42")
    assert target.read_text() == "42"
    assert [p.name for p in tmp_path.iterdir()] == ["pid"]


def test_rfc3339_time() -> None:
    stamp = st.now_rfc3339()
    assert stamp.endswith("Z") and stamp[10] == "T" and len(stamp) == 27
