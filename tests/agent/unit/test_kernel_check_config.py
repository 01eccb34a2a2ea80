"""The kernel configuration: finding it, parsing it, gating options on its version."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

from gantry import kernel_check as kc


def check(sysroot: Path, config: Path | str | None = None, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("environ", {})
    return kc.run_checks(
        config_path=None if config is None else str(config), sysroot=str(sysroot), **kwargs
    )


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in report["items"]}


def test_parse_config_reads_only_anchored_lines() -> None:
    text = "\n".join(
        [
            "# Linux/x86 6.18.44 Kernel Configuration",
            "CONFIG_PID_NS=y",
            "CONFIG_VETH=m",
            "# CONFIG_USER_NS is not set",
            'CONFIG_LSM="apparmor,selinux"',
            "XCONFIG_NET_NS=y",
            "  CONFIG_IPC_NS=y",
            "# the next line is a comment that mentions CONFIG_UTS_NS=y",
        ]
    )
    options, version, arch = kc.parse_config(text)
    assert options == {"PID_NS": "y", "VETH": "m", "USER_NS": "n", "LSM": '"apparmor,selinux"'}
    assert (version, arch) == ("6.18.44", "x86")


def test_parse_config_old_header_format() -> None:
    _options, version, arch = kc.parse_config(
        "# Linux kernel version: 2.6.32\nCONFIG_NAMESPACES=y\n"
    )
    assert (version, arch) == ("2.6.32", None)


def test_missing_pid_ns_is_missing_with_a_hint(make_sysroot: Any, kernel_config: Any) -> None:
    report = check(make_sysroot("hybrid"), kernel_config(drop=["PID_NS"]))
    item = by_id(report)["CONFIG_PID_NS"]
    assert item["status"] == "missing"
    assert item["value"] == "n"
    assert "CONFIG_PID_NS=y" in item["hint"]
    assert report["summary"]["required_missing"] == ["CONFIG_PID_NS"]
    assert report["summary"]["exit_code"] == kc.EXIT_MISSING == 1
    assert report["features"]["namespaces"] == {
        "requested": True,
        "status": "missing",
        "missing": ["CONFIG_PID_NS"],
    }


def test_not_set_and_absent_both_read_as_n(make_sysroot: Any, kernel_config: Any) -> None:
    config = kernel_config(drop=["UTS_NS"], values={"IPC_NS": None})
    items = by_id(check(make_sysroot("hybrid"), config))
    assert items["CONFIG_UTS_NS"]["value"] == items["CONFIG_IPC_NS"]["value"] == "n"
    assert items["CONFIG_UTS_NS"]["detail"].startswith("not in this configuration")
    assert items["CONFIG_IPC_NS"]["detail"].startswith("not set")


def test_full_config_on_a_sane_host_exits_0(make_sysroot: Any, kernel_config: Any) -> None:
    report = check(make_sysroot("hybrid"), kernel_config())
    assert report["config"]["readable"] is True
    assert report["kernel"] == {
        "release": "6.18.44-test",
        "version": "6.18.44",
        "running": True,
        "arch": "x86_64",
    }
    assert report["summary"]["missing"] == 0, report["summary"]
    assert report["summary"]["exit_code"] == kc.EXIT_OK


def test_unreadable_config_makes_every_option_unknown_never_missing(make_sysroot: Any) -> None:
    report = check(make_sysroot("hybrid"), "/nonexistent/config")
    kconfig = [item for item in report["items"] if item["kind"] == "kconfig"]
    assert kconfig
    assert {item["status"] for item in kconfig} == {"unknown"}
    assert all(item["value"] is None and item["hint"] for item in kconfig)
    assert report["summary"]["missing"] == 0
    assert report["summary"]["exit_code"] == kc.EXIT_UNREADABLE == 2
    assert report["config"]["readable"] is False
    assert report["config"]["modules_supported"] is None
    assert "/nonexistent/config" in report["config"]["error"]
    # A path the caller chose is what to fix; the error carries the fix as well.
    assert report["config"]["hint"].startswith("point --config (config_path) at")
    assert report["config"]["hint"] in report["config"]["error"]


def test_known_missing_beats_unreadable_config(make_sysroot: Any) -> None:
    root = make_sysroot()  # no cgroup hierarchy mounted at all
    (root / "proc/self/mountinfo").write_text("17 0 8:1 / / rw - ext4 /dev/sda1 rw\n")
    report = check(root, "/nonexistent/config")
    assert by_id(report)["cgroup:hierarchy"]["status"] == "missing"
    assert report["summary"]["exit_code"] == kc.EXIT_MISSING


def test_search_order_and_tried_paths_when_nothing_is_found(make_sysroot: Any) -> None:
    root = make_sysroot("hybrid")
    report = check(root)
    tried = report["config"]["tried"]
    assert tried == [
        f"{root}/proc/config.gz",
        f"{root}/boot/config-6.18.44-test",
        f"{root}/lib/modules/6.18.44-test/build/.config",
        f"{root}/usr/src/linux-6.18.44-test/.config",
        f"{root}/usr/src/linux/.config",
    ]
    for path in tried:
        assert path in report["config"]["error"]
    assert "modprobe configs" in report["config"]["hint"]
    assert "/boot/config-6.18.44-test" in report["config"]["hint"]
    assert report["summary"]["exit_code"] == kc.EXIT_UNREADABLE


def test_proc_config_gz_is_found_first_and_gzip_is_sniffed(
    make_sysroot: Any, kernel_config: Any
) -> None:
    root = make_sysroot("hybrid")
    (root / "boot").mkdir()
    text = kernel_config().read_bytes()
    (root / "boot/config-6.18.44-test").write_bytes(text.replace(b"CONFIG_PID_NS=y", b""))
    (root / "proc/config.gz").write_bytes(gzip.compress(text))
    report = check(root)
    assert report["config"]["path"] == f"{root}/proc/config.gz"
    assert by_id(report)["CONFIG_PID_NS"]["status"] == "ok"


def test_boot_config_is_the_fallback(make_sysroot: Any, kernel_config: Any) -> None:
    root = make_sysroot("hybrid")
    (root / "boot").mkdir()
    (root / "boot/config-6.18.44-test").write_bytes(kernel_config().read_bytes())
    report = check(root)
    assert report["config"]["path"] == f"{root}/boot/config-6.18.44-test"
    assert report["kernel"]["running"] is True


def test_config_environment_variable_comes_before_the_search(
    make_sysroot: Any, kernel_config: Any, tmp_path: Path
) -> None:
    root = make_sysroot("hybrid")
    (root / "proc/config.gz").write_bytes(gzip.compress(kernel_config().read_bytes()))
    chosen = kernel_config(drop=["PID_NS"])
    report = check(root, environ={"CONFIG": str(chosen)})
    assert report["config"]["path"] == str(chosen)
    assert report["summary"]["exit_code"] == kc.EXIT_MISSING


def test_a_gzip_config_without_the_gz_name(
    make_sysroot: Any, kernel_config: Any, tmp_path: Path
) -> None:
    packed = tmp_path / "config-copy"
    packed.write_bytes(gzip.compress(kernel_config().read_bytes()))
    report = check(make_sysroot("hybrid"), packed)
    assert report["config"]["readable"] is True
    assert by_id(report)["CONFIG_NAMESPACES"]["value"] == "y"


def test_garbage_is_not_a_config(make_sysroot: Any, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x1f\x8bnot really gzip")
    report = check(make_sysroot("hybrid"), junk)
    assert report["config"]["readable"] is False
    assert "gzip" in report["config"]["error"]
    plain = tmp_path / "plain"
    plain.write_text("hello\n")
    assert "no CONFIG_ lines" in check(make_sysroot("hybrid"), plain)["config"]["error"]


def test_version_gates_follow_the_config_header_not_uname(
    make_sysroot: Any, kernel_config: Any
) -> None:
    root = make_sysroot("hybrid")  # the running kernel is 6.18.44-test
    old = by_id(check(root, kernel_config("old-4.4")))
    new = by_id(check(root, kernel_config()))
    assert "CONFIG_DEVPTS_MULTIPLE_INSTANCES" in old
    assert "CONFIG_DEVPTS_MULTIPLE_INSTANCES" not in new
    # Options that only exist on one side of a version.
    for option in ("MEMCG_SWAP", "MEMCG_KMEM", "NF_NAT_IPV4", "NF_NAT_NEEDED", "IOSCHED_CFQ"):
        assert f"CONFIG_{option}" in old and f"CONFIG_{option}" not in new
    for option in ("CGROUP_BPF", "TIME_NS"):
        assert f"CONFIG_{option}" in new and f"CONFIG_{option}" not in old


def test_devpts_multiple_instances_is_required_on_old_kernels(
    make_sysroot: Any, kernel_config: Any
) -> None:
    report = check(
        make_sysroot("hybrid"), kernel_config("old-4.4", drop=["DEVPTS_MULTIPLE_INSTANCES"])
    )
    assert by_id(report)["CONFIG_DEVPTS_MULTIPLE_INSTANCES"]["status"] == "missing"
    assert report["summary"]["exit_code"] == kc.EXIT_MISSING


def test_another_kernels_config_skips_runtime_items(make_sysroot: Any, kernel_config: Any) -> None:
    report = check(make_sysroot("hybrid", "modules"), kernel_config("old-4.4"))
    assert report["kernel"]["running"] is False
    assert report["kernel"]["release"] == "4.4.302"
    assert report["kernel"]["version"] == "4.4.302"
    runtime = [i for i in report["items"] if i["kind"] in ("probe", "sysctl", "cgroup", "lsm")]
    assert runtime
    assert {i["status"] for i in runtime} == {"skipped"}
    assert all(i["hint"] for i in runtime)
    modules = [i["module"] for i in report["items"] if i["value"] == "m" and i["module"]]
    assert modules and {m["state"] for m in modules} == {"unknown"}
    assert report["summary"]["exit_code"] == kc.EXIT_OK


def test_a_config_matching_proc_version_is_the_running_kernel(
    make_sysroot: Any, kernel_config: Any
) -> None:
    # Debian: uname -r is 6.1.0-28-amd64 while the header and /proc/version say 6.1.119.
    root = make_sysroot("hybrid")
    (root / "proc/sys/kernel/osrelease").write_text("6.1.0-28-amd64\n")
    (root / "proc/version").write_text(
        "Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC "
        "Debian 6.1.119-1 (2024-11-22)\n"
    )
    config = kernel_config()
    config.write_text(config.read_text().replace("6.18.44 Kernel", "6.1.119 Kernel"))
    report = check(root, config)
    assert report["kernel"]["running"] is True
    assert report["kernel"]["release"] == "6.1.0-28-amd64"
    config.write_text(config.read_text().replace("6.1.119 Kernel", "6.1.11 Kernel"))
    assert check(root, config)["kernel"]["running"] is False


def test_cpusets_only_counts_on_smp_kernels(make_sysroot: Any, kernel_config: Any) -> None:
    root = make_sysroot("hybrid")
    assert "CONFIG_CPUSETS" in by_id(check(root, kernel_config()))
    items = by_id(check(root, kernel_config(drop=["SMP", "CPUSETS"])))
    assert "CONFIG_CPUSETS" not in items
