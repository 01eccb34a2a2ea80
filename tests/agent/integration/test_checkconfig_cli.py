"""``gantry checkconfig`` through the installed console script, as root on the real kernel."""

from __future__ import annotations

import gzip
import json
import os
import pty
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.root

ANSI = re.compile(r"\x1b\[[0-9;]*m")
NAMESPACES = ("mnt", "uts", "ipc", "pid", "net", "cgroup", "user", "time")


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "CONFIG", "TERM")}
    env.update(overrides)
    return env


def gantry(
    binary: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env or clean_env(),
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def json_report(binary: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = gantry(binary, "checkconfig", "--json", *args)
    assert result.stderr == ""
    return result.returncode, json.loads(result.stdout)


def on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run with stdout on a pseudo-terminal, as a person at a shell would."""
    controller, terminal = pty.openpty()
    with subprocess.Popen(argv, stdout=terminal, stderr=subprocess.DEVNULL, env=env) as proc:
        os.close(terminal)
        chunks = []
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO once the child has closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=60)
    os.close(controller)
    return code, b"".join(chunks).decode()


def cgroup_mounts() -> tuple[dict[str, str], list[str]]:
    """An independent reading of /proc/self/mountinfo: v1 controllers and cgroup2 mounts."""
    v1: dict[str, str] = {}
    v2: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _sep, tail = line.partition(" - ")
        fstype, _source, options = tail.split()[:3]
        mountpoint = fields.split()[4]
        if fstype == "cgroup2":
            v2.append(mountpoint)
        elif fstype == "cgroup":
            for option in options.split(","):
                v1.setdefault(option, mountpoint)  # only controller names are looked up
    return v1, v2


def test_json_report_on_this_machine(gantry_bin: Path) -> None:
    code, report = json_report(gantry_bin)
    assert code == 0, report["summary"]
    assert report["summary"]["exit_code"] == 0
    assert report["kernel"]["running"] is True
    assert report["kernel"]["release"] == os.uname().release
    assert report["config"]["readable"] is True
    items = {item["id"]: item for item in report["items"]}
    # Every probe ran here, as root, and passed.
    probes = [item for item in report["items"] if item["kind"] == "probe"]
    for name in NAMESPACES:
        assert items[f"probe:unshare:{name}"]["status"] == "ok"
    assert "PID 1" in items["probe:unshare:pid"]["detail"]
    assert items["probe:overlay"]["status"] == "ok"
    assert "whiteout" in items["probe:overlay"]["detail"]
    assert items["probe:seccomp"]["status"] == "ok"
    cgroup_probes = [item for item in probes if item["id"].startswith("probe:cgroup:")]
    assert cgroup_probes
    assert {item["status"] for item in probes} == {"ok"}, [i for i in probes if i["status"] != "ok"]
    # The cgroup layout agrees with an independent reading of the mount table.
    v1, v2 = cgroup_mounts()
    assert report["cgroup"]["v2"]["mount"] == (
        "/sys/fs/cgroup" if "/sys/fs/cgroup" in v2 else v2[0]
    )
    for controller in ("cpu", "memory", "pids", "devices", "freezer"):
        if controller in v1:
            assert report["cgroup"]["v1"][controller] == v1[controller]
    v2_controllers = Path(report["cgroup"]["v2"]["mount"], "cgroup.controllers").read_text().split()
    assert report["cgroup"]["v2"]["controllers"] == v2_controllers
    assert len(cgroup_probes) == len(set(report["cgroup"]["v1"].values())) + 1


def test_this_machines_hybrid_layout_and_built_in_kernel(gantry_bin: Path) -> None:
    if not Path("/sys/fs/cgroup/unified/cgroup.controllers").exists():
        pytest.skip("not this machine's hybrid layout (no cgroup2 at /sys/fs/cgroup/unified)")
    _code, report = json_report(gantry_bin)
    assert report["cgroup"]["layout"] == "hybrid"
    assert report["cgroup"]["v2"]["controllers"] == ["hugetlb"]
    assert report["config"]["modules_supported"] is False  # CONFIG_MODULES is unset here
    states = {item["module"]["state"] for item in report["items"] if item["module"]}
    assert "not_loaded" not in states
    assert states == {"builtin"}


def test_config_lacking_pid_ns_exits_1(gantry_bin: Path, tmp_path: Path) -> None:
    text = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    crafted = tmp_path / "config.gz"
    crafted.write_bytes(gzip.compress(re.sub(r"^CONFIG_PID_NS=y\n", "", text, flags=re.M).encode()))
    code, report = json_report(gantry_bin, "--config", str(crafted))
    assert code == 1
    assert report["kernel"]["running"] is True  # same header version as the running kernel
    item = next(i for i in report["items"] if i["id"] == "CONFIG_PID_NS")
    assert item["status"] == "missing" and "CONFIG_PID_NS=y" in item["hint"]
    assert report["summary"]["required_missing"] == ["CONFIG_PID_NS"]
    text_run = gantry(gantry_bin, "checkconfig", "--config", str(crafted))
    assert text_run.returncode == 1
    assert "PID namespace [CONFIG_PID_NS]: missing" in text_run.stdout
    assert "the kernel lacks 1 required item" in text_run.stdout


def test_nonexistent_config_exits_2_with_unknown_items(gantry_bin: Path) -> None:
    code, report = json_report(gantry_bin, "--config", "/nonexistent")
    assert code == 2
    kconfig = [item for item in report["items"] if item["kind"] == "kconfig"]
    assert kconfig and {item["status"] for item in kconfig} == {"unknown"}
    assert report["summary"]["missing"] == 0
    assert "/nonexistent" in report["config"]["error"]


def test_another_kernels_config_skips_the_probes(gantry_bin: Path, tmp_path: Path) -> None:
    other = tmp_path / "config-4.19"
    text = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    other.write_text(
        re.sub(r"^# Linux/(\S+) \S+ Kernel", r"# Linux/\1 4.19.0 Kernel", text, flags=re.M)
    )
    code, report = json_report(gantry_bin, "--config", str(other))
    assert report["kernel"]["running"] is False
    assert report["kernel"]["version"] == "4.19.0"
    probes = [item for item in report["items"] if item["kind"] == "probe"]
    assert {item["status"] for item in probes} == {"skipped"}
    # Gated on the header, not on uname: a 4.19 kernel still needed the separate NAT options.
    assert code == 1
    assert report["summary"]["required_missing"] == ["CONFIG_NF_NAT_IPV4", "CONFIG_NF_NAT_NEEDED"]


def test_no_probes(gantry_bin: Path) -> None:
    code, report = json_report(gantry_bin, "--no-probes")
    assert code == 0
    probes = [item for item in report["items"] if item["kind"] == "probe"]
    assert probes and {item["status"] for item in probes} == {"skipped"}


def test_features_all_and_only(gantry_bin: Path) -> None:
    _code, report = json_report(gantry_bin, "--feature", "all")
    assert all(feature["requested"] for feature in report["features"].values())
    _code, report = json_report(gantry_bin, "--only", "--feature", "userns,timens")
    assert report["requested"] == ["userns", "timens"]
    _code, report = json_report(gantry_bin, "--feature", "userns", "--feature", "fuse")
    assert report["requested"][-2:] == ["userns", "fuse"] and "namespaces" in report["requested"]
    _code, report = json_report(gantry_bin, "--feature", "lsm", "vlan", "--no-probes")
    assert report["requested"][-2:] == ["lsm", "vlan"]


def test_bad_feature_is_one_line_and_exit_2(gantry_bin: Path) -> None:
    result = gantry(gantry_bin, "checkconfig", "--feature", "warp-drive")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "'warp-drive'" in lines[0] and "namespaces" in lines[0] and "timens" in lines[0]


def test_no_color_without_a_terminal(gantry_bin: Path) -> None:
    result = gantry(gantry_bin, "checkconfig")
    assert result.returncode == 0
    assert not ANSI.search(result.stdout)
    assert "--- Namespaces ---" in result.stdout
    assert "PID namespace [CONFIG_PID_NS]: enabled" in result.stdout
    result = gantry(gantry_bin, "checkconfig", env=clean_env(NO_COLOR="1"))
    assert not ANSI.search(result.stdout)


def test_color_only_on_a_terminal_without_no_color(gantry_bin: Path) -> None:
    argv = [str(gantry_bin), "checkconfig", "--no-probes"]
    code, output = on_a_terminal(argv, clean_env(TERM="xterm"))
    assert code == 0 and ANSI.search(output)
    _code, output = on_a_terminal(argv, clean_env(TERM="xterm", NO_COLOR="1"))
    assert "--- Namespaces ---" in output and not ANSI.search(output)
    _code, output = on_a_terminal(argv, clean_env(TERM="dumb"))
    assert "--- Namespaces ---" in output and not ANSI.search(output)


def test_version_and_usage(gantry_bin: Path) -> None:
    result = gantry(gantry_bin, "--version")
    assert result.returncode == 0 and result.stdout.strip() == "gantry 0.1.0"
    result = gantry(gantry_bin)
    assert result.returncode == 2 and "checkconfig" in result.stderr
    result = gantry(gantry_bin, "checkconfig", "--help")
    assert result.returncode == 0
    assert "timens" in result.stdout and "exit status" in result.stdout


def test_gantry_runtime_usage(gantry_bin: Path) -> None:
    runtime = gantry_bin.with_name("gantry-runtime")
    result = subprocess.run([str(runtime)], check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: gantry-runtime")
    result = subprocess.run(
        [str(runtime), "--help"], check=False, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    for verb in ("create", "start", "state", "kill", "delete"):
        assert verb in result.stdout
