"""LogOptions: what the shim is told about a container's log, checked before any fork."""

from __future__ import annotations

from pathlib import Path

import pytest
from gantry.runtime.shim import LINE_MAX, MAX_LOG_FILES, LogOptions


def test_defaults_and_shim_arguments() -> None:
    options = LogOptions(Path("/var/log/c.log"))
    assert (options.max_size, options.max_files) == (0, 1)
    assert options.shim_args() == ["/var/log/c.log", "0", "1"]
    sized = LogOptions("/var/log/c.log", max_size=1 << 20, max_files=3)  # type: ignore[arg-type]
    assert sized.path == Path("/var/log/c.log")
    assert sized.shim_args() == ["/var/log/c.log", str(1 << 20), "3"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"path": Path("relative.log")}, "log_path"),
        ({"max_size": -1}, "log_max_size"),
        ({"max_size": 2 * LINE_MAX - 1}, "log_max_size"),
        ({"max_size": 1.5}, "log_max_size"),
        ({"max_size": True}, "log_max_size"),
        ({"max_files": -1}, "log_max_files"),
        ({"max_files": MAX_LOG_FILES + 1}, "log_max_files"),
        ({"max_files": "2"}, "log_max_files"),
    ],
)
def test_bad_values_name_the_field(kwargs: dict[str, object], field: str) -> None:
    values: dict[str, object] = {"path": Path("/var/log/c.log"), **kwargs}
    with pytest.raises(ValueError, match=f"^{field}:"):
        LogOptions(**values)  # type: ignore[arg-type]


def test_the_smallest_limits_are_accepted() -> None:
    assert LogOptions(Path("/l"), max_size=2 * LINE_MAX, max_files=0).max_size == 2 * LINE_MAX
    assert LogOptions(Path("/l"), max_files=MAX_LOG_FILES).max_files == MAX_LOG_FILES
