"""Shared fixtures for the agent's pytest tiers (unit: no root; integration: root, real kernel)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
KERNEL_FIXTURES = FIXTURES / "kernel_check"
ANCHORS = REPO / ".cache" / "anchors"

MakeSysroot = Callable[..., Path]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``root`` need root and this machine's real kernel: skip them otherwise."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (run the integration tier as root)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def make_sysroot(tmp_path: Path) -> MakeSysroot:
    """Build a crafted host tree: the ``base`` sysroot plus the named layers on top
    (``unified``, ``hybrid``, ``legacy``, ``modules``), copied so a test may change it."""

    def build(*layers: str) -> Path:
        root = tmp_path / "sysroot"
        for layer in ("base", *layers):
            source = KERNEL_FIXTURES / "sysroots" / layer
            if not source.is_dir():
                raise ValueError(f"no sysroot layer {layer!r} under {source.parent}")
            shutil.copytree(source, root, dirs_exist_ok=True, symlinks=True)
        return root

    return build


@pytest.fixture
def kernel_config(tmp_path: Path) -> Callable[..., Path]:
    """A copy of a fixture config (``full-6.18`` by default) with options removed or set:
    ``kernel_config(drop=["PID_NS"], values={"MODULES": None})`` (None: "is not set")."""

    def build(
        name: str = "full-6.18",
        drop: tuple[str, ...] | list[str] = (),
        values: dict[str, str | None] | None = None,
    ) -> Path:
        lines = (KERNEL_FIXTURES / "configs" / f"{name}.config").read_text().splitlines()
        changes = dict(values or {})
        out = []
        for line in lines:
            option = _option_of(line)
            if option in drop:
                continue
            if option is not None and option in changes:
                value = changes.pop(option)
                line = f"CONFIG_{option}={value}" if value else f"# CONFIG_{option} is not set"
            out.append(line)
        for option, value in changes.items():
            out.append(f"CONFIG_{option}={value}" if value else f"# CONFIG_{option} is not set")
        path = tmp_path / f"{name}-crafted.config"
        path.write_text("\n".join(out) + "\n")
        return path

    return build


def _option_of(line: str) -> str | None:
    if line.startswith("CONFIG_"):
        return line[7:].split("=", 1)[0]
    if line.startswith("# CONFIG_") and line.endswith(" is not set"):
        return line[9:-11]
    return None


@pytest.fixture
def anchors() -> Path:
    """The extracted anchor scripts (lxc-checkconfig, moby's check-config.sh, Debian configs)."""
    if not (ANCHORS / "lxc-checkconfig").is_file() or not (ANCHORS / "check-config.sh").is_file():
        pytest.skip(f"anchor scripts not extracted at {ANCHORS} (run `make setup`)")
    return ANCHORS


@pytest.fixture
def gantry_bin() -> Path:
    """The installed ``gantry`` console script of this interpreter's environment."""
    path = Path(sys.executable).parent / "gantry"
    if not path.exists():
        found = shutil.which("gantry")
        if found is None:
            pytest.fail("the gantry console script is not installed: pip install -e agent")
        path = Path(found)
    return path


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    """Fail the test if it leaves a mount, a gantry cgroup or a gantry temp entry behind."""
    before = _host_state()
    yield
    after = _host_state()
    assert after == before, f"left behind: {_difference(before, after)}"


def _host_state() -> dict[str, set[str]]:
    import tempfile

    mounts = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mounts.add(" ".join(fields[3:5] + line.partition(" - ")[2].split()[:2]))
    cgroups = {str(p) for p in _walk_cgroups(Path("/sys/fs/cgroup")) if "gantry" in p.name}
    tmp = {name for name in os.listdir(tempfile.gettempdir()) if "gantry-probe" in name}
    return {"mounts": mounts, "cgroups": cgroups, "tmp": tmp}


def _walk_cgroups(top: Path) -> Iterator[Path]:
    for dirpath, dirnames, _filenames in os.walk(top):
        for name in dirnames:
            yield Path(dirpath) / name


def _difference(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, object]:
    return {
        key: {"new": sorted(after[key] - before[key]), "gone": sorted(before[key] - after[key])}
        for key in before
        if after[key] != before[key]
    }
