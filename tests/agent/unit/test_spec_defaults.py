"""gantry.runtime.defaults: the hardened default spec."""

from pathlib import Path

import pytest
from gantry.runtime.defaults import (
    DEFAULT_CAPABILITIES,
    default_config,
    default_spec,
)
from gantry.runtime.spec import CAPABILITIES, OCI_VERSION, Spec, SpecError, load_spec

# `runc spec` output (libcontainer/specconv/example.go), see shared/reference/runtimes.md.
RUNC_MASKED = {
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
}
READONLY = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
DOCKER_CAPS = {
    f"CAP_{name}"
    for name in [
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    ]
}


@pytest.fixture
def spec() -> Spec:
    return default_spec(["/bin/sh", "-c", "echo hi"], "/var/lib/gantry/containers/c1/rootfs")


def test_default_spec_validates_and_round_trips(spec: Spec) -> None:
    assert spec.oci_version == OCI_VERSION
    assert load_spec(spec.to_dict()) == spec
    assert spec == load_spec(default_config(["/bin/sh", "-c", "echo hi"], spec.root.path))
    assert spec.warnings == ()


def test_process_is_hardened(spec: Spec) -> None:
    process = spec.process
    assert process is not None
    assert process.args == ("/bin/sh", "-c", "echo hi")
    assert process.cwd == "/"
    assert (process.user.uid, process.user.gid) == (0, 0)
    assert process.no_new_privileges is True
    assert [(r.type, r.soft, r.hard) for r in process.rlimits] == [("RLIMIT_NOFILE", 1024, 1024)]
    caps = process.capabilities
    assert caps is not None
    assert set(caps.bounding) == set(caps.effective) == set(caps.permitted) == DOCKER_CAPS
    assert set(DEFAULT_CAPABILITIES) == DOCKER_CAPS <= set(CAPABILITIES)
    assert caps.inheritable == () and caps.ambient == ()
    assert "CAP_SYS_ADMIN" not in caps.bounding


def test_namespaces_are_private_but_user_and_time(spec: Spec) -> None:
    for kind in ("pid", "network", "ipc", "uts", "mount", "cgroup"):
        assert spec.has_namespace(kind), kind
        assert spec.namespace_path(kind) is None, kind
    assert not spec.has_namespace("user")
    assert not spec.has_namespace("time")


def test_paths_are_masked_and_read_only(spec: Spec) -> None:
    assert spec.linux is not None
    assert set(spec.linux.masked_paths) >= RUNC_MASKED
    assert "/sys/devices/virtual/powercap" in spec.linux.masked_paths
    assert set(spec.linux.readonly_paths) == READONLY


def test_default_mounts(spec: Spec) -> None:
    mounts = {m.destination: m for m in spec.mounts}

    assert list(mounts) == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ]
    assert [mounts[d].type for d in mounts] == [
        "proc",
        "tmpfs",
        "devpts",
        "tmpfs",
        "mqueue",
        "sysfs",
        "cgroup",
    ]
    assert "ro" in mounts["/sys"].options
    assert "ro" in mounts["/sys/fs/cgroup"].options
    assert {"nosuid", "noexec", "nodev"} <= set(mounts["/proc"].options)
    assert "mode=1777" in mounts["/dev/shm"].options
    assert "newinstance" in mounts["/dev/pts"].options
    assert spec.root.readonly is False


def test_device_cgroup_denies_all_but_the_standard_devices(spec: Spec) -> None:
    assert spec.linux is not None and spec.linux.resources is not None
    rules = spec.linux.resources.devices
    assert (rules[0].allow, rules[0].type, rules[0].access) == (False, None, "rwm")
    allowed = {(r.type, r.major, r.minor) for r in rules[1:] if r.allow and r.access == "rwm"}
    for major, minor in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)):
        assert ("c", major, minor) in allowed
    assert ("c", 136, None) in allowed
    assert all(r.allow for r in rules[1:])


def test_options(tmp_path: Path) -> None:
    spec = default_spec(
        ["top"], tmp_path, env=["A=1"], cwd="/work", terminal=True, hostname="web-1"
    )

    assert spec.root.path == str(tmp_path)
    assert spec.hostname == "web-1"
    assert spec.process is not None
    assert spec.process.terminal is True
    assert spec.process.env == ("A=1",)
    assert spec.process.cwd == "/work"


def test_terminal_gets_a_term_by_default() -> None:
    spec = default_spec(["sh"], "rootfs", terminal=True)

    assert spec.process is not None
    assert "TERM=xterm" in spec.process.env
    assert any(e.startswith("PATH=") for e in spec.process.env)


def test_default_config_is_fresh_plain_data() -> None:
    first = default_config(["sh"], "rootfs")
    first["linux"]["maskedPaths"].clear()
    first["mounts"][0]["options"].append("ro")

    second = default_config(["sh"], "rootfs")

    assert second["linux"]["maskedPaths"]
    assert "ro" not in second["mounts"][0]["options"]


def test_bad_input_is_refused_by_the_same_validation() -> None:
    with pytest.raises(SpecError) as caught:
        default_spec([], "rootfs", cwd="work")

    assert sorted(p for p, _message in caught.value.errors) == ["process.args", "process.cwd"]
