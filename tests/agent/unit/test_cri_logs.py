"""The CRI log reader without a container: records, pieces joined, malformed lines
skipped, tail and time windows, rotated files read oldest first, and the query values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gantry.engine import spec as specs
from gantry.engine.errors import Invalid
from gantry.engine.logs import (
    LogLine,
    format_time,
    join_records,
    parse_record,
    parse_tail,
    parse_time,
    read_lines,
)

T0 = "2026-11-23T12:00:00.000000001Z"
T1 = "2026-11-23T12:00:01.000000000Z"
T2 = "2026-11-23T12:00:02.500000000Z"


def record(stamp: str, stream: str, tag: str, text: str) -> bytes:
    return f"{stamp} {stream} {tag} {text}\n".encode()


def lines(path: Path, **options: object) -> list[LogLine]:
    found = [line for line in read_lines(path, **options) if line is not None]  # type: ignore[arg-type]
    return found


def test_a_record_is_parsed_and_a_malformed_one_is_not() -> None:
    assert parse_record(b"2026-11-23T12:00:00.000000001Z stdout F hi there") == (
        T0,
        "stdout",
        True,
        b"hi there",
    )
    assert parse_record(b"2026-11-23T12:00:00.000000001Z stderr P ") == (T0, "stderr", False, b"")
    for bad in (
        b"",
        b"hello",
        b"2026-11-23T12:00:00Z stdout F short time",
        b"2026-11-23T12:00:00.000000001Z stdin F wrong stream",
        b"2026-11-23T12:00:00.000000001Z stdout X wrong tag",
        b"2026-11-23T12:00:00.000000001Z stdout F",
    ):
        assert parse_record(bad) is None, bad


def test_pieces_are_joined_per_stream_and_garbage_is_skipped() -> None:
    data = b"".join(
        (
            record(T0, "stdout", "P", "hel"),
            record(T0, "stderr", "P", "oo"),
            b"garbage in the middle\n",
            record(T1, "stdout", "F", "lo"),
            record(T1, "stderr", "F", "ps"),
            record(T2, "stdout", "P", "no newline"),
        )
    )
    found = list(join_records(data))
    assert found == [
        LogLine(T1, "stdout", b"hello"),
        LogLine(T1, "stderr", b"oops"),
        LogLine(T2, "stdout", b"no newline", complete=False),
    ]


def test_tail_streams_and_window(tmp_path: Path) -> None:
    log = tmp_path / "container.log"
    log.write_bytes(
        record(T0, "stdout", "F", "a")
        + record(T0, "stderr", "F", "b")
        + record(T1, "stdout", "F", "c")
        + record(T2, "stderr", "P", "d")
        + record(T2, "stderr", "F", "e")
        + b"half a record without its newl"
    )

    def texts(**options: object) -> list[bytes]:
        return [line.text for line in lines(log, **options)]

    assert texts() == [b"a", b"b", b"c", b"de"]
    assert texts(tail=2) == [b"c", b"de"]
    assert texts(tail=0) == []
    assert texts(tail=10) == [b"a", b"b", b"c", b"de"]
    assert texts(streams=("stdout",)) == [b"a", b"c"]
    assert texts(streams=("stderr",), tail=1) == [b"de"]
    assert texts(since=T1) == [b"c", b"de"]
    assert texts(until=T1) == [b"a", b"b", b"c"]
    assert texts(since=T1, until=T1) == [b"c"]


def test_rotated_files_are_read_oldest_first(tmp_path: Path) -> None:
    log = tmp_path / "container.log"
    Path(f"{log}.2").write_bytes(record(T0, "stdout", "F", "one"))
    Path(f"{log}.1").write_bytes(record(T1, "stdout", "F", "two"))
    log.write_bytes(record(T2, "stdout", "F", "three"))
    Path(f"{log}.x").write_bytes(record(T2, "stdout", "F", "not a rotated file"))
    assert [line.text for line in lines(log)] == [b"one", b"two", b"three"]
    assert [line.text for line in lines(log, tail=2)] == [b"two", b"three"]
    os.unlink(log)  # between a rotation's rename and the new file
    assert [line.text for line in lines(log)] == [b"one", b"two"]


def test_a_missing_log_has_no_lines(tmp_path: Path) -> None:
    assert lines(tmp_path / "none") == []


def test_time_values() -> None:
    assert parse_time("2026-11-23T12:00:00.000000001Z", "since") == 1_795_435_200_000_000_001
    assert format_time(parse_time("2026-11-23T12:00:00.000000001Z", "since")) == T0
    assert format_time(parse_time("2026-11-23T14:00:01+02:00", "since")) == T1
    assert format_time(parse_time("1795435201", "since")) == T1
    assert format_time(parse_time("1795435202.5", "until")) == T2
    now = parse_time("1795435202.5", "until")
    assert parse_time("10m", "since", now_ns=now) == now - 600 * 10**9
    assert parse_time("1h30m", "since", now_ns=now) == now - 5400 * 10**9
    assert parse_time("1.5s", "since", now_ns=now) == now - 1_500_000_000
    for bad in ("yesterday", "", "10x", "2026-13-01T00:00:00Z", "-5", "2026-11-23"):
        with pytest.raises(Invalid) as caught:
            parse_time(bad, "since")
        assert caught.value.field == "query.since"


def test_tail_values() -> None:
    assert parse_tail("all") is None and parse_tail("3") == 3 and parse_tail(None) is None
    with pytest.raises(Invalid) as caught:
        parse_tail("-1")
    assert caught.value.field == "query.tail"


def test_spec_log_field(tmp_path: Path) -> None:
    def normal(log: object) -> object:
        return specs.normalise(
            {"rootfs": str(tmp_path), "command": ["true"], "log": log}, name="c"
        )["log"]

    assert normal(None) == {"max_size": None, "max_files": None}
    assert normal({"max_size": "1m", "max_files": 2}) == {"max_size": 1 << 20, "max_files": 2}
    assert normal({"max_size": 0, "max_files": 0}) == {"max_size": 0, "max_files": 0}
    for bad, field in (
        ({"max_size": 100}, "spec.log.max_size"),
        ({"max_size": "lots"}, "spec.log.max_size"),
        ({"max_files": -1}, "spec.log.max_files"),
        ({"max_files": 1001}, "spec.log.max_files"),
        ({"max_files": "3"}, "spec.log.max_files"),
        ({"driver": "json"}, "spec.log.driver"),
        ("10m", "spec.log"),
    ):
        with pytest.raises(Invalid) as caught:
            normal(bad)
        assert caught.value.field == field, bad
    assert "log" in specs.IN_PLACE_FIELDS


def test_agent_log_rotation_settings(tmp_path: Path) -> None:
    from gantry.cli.agent import SettingsError, load_settings
    from gantry.cli.main import build_parser

    def settings(*argv: str) -> dict[str, object]:
        return load_settings(build_parser().parse_args(["agent", "serve", *argv]))

    config = tmp_path / "agent.toml"
    config.write_text('log_max_size = "2m"\nlog_max_files = 5\n')
    loaded = settings("--config", str(config))
    assert (loaded["log_max_size"], loaded["log_max_files"]) == (2 << 20, 5)
    loaded = settings("--config", str(config), "--log-max-size", "65536", "--log-max-files", "0")
    assert (loaded["log_max_size"], loaded["log_max_files"]) == (65536, 0)
    for argv, key in (
        (("--log-max-size", "100"), "log_max_size"),
        (("--log-max-size", "big"), "log_max_size"),
        (("--log-max-files", "x"), "log_max_files"),
        (("--log-max-files", "1001"), "log_max_files"),
    ):
        with pytest.raises(SettingsError, match=key):
            settings("--config", str(config), *argv)
