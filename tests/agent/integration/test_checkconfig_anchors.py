"""Agreement with the anchors: lxc-checkconfig (LXC 5.0.2) and moby's check-config.sh
(Debian docker.io 20.10), run on this machine in the same test.

Every line either script prints is mapped to one of our items or facts and compared, or is
on a short list of things we deliberately do not check (with the reason). A new or renamed
line in an anchor therefore fails the test instead of silently dropping out.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from gantry import kernel_check as kc

pytestmark = pytest.mark.root

ANSI = re.compile(r"\x1b\[[0-9;]*m")

# lxc-checkconfig label -> our item (kernel options; the cgroup namespace is a runtime fact).
LXC_LABELS = {
    "Namespaces": "CONFIG_NAMESPACES",
    "Utsname namespace": "CONFIG_UTS_NS",
    "Ipc namespace": "CONFIG_IPC_NS",
    "Pid namespace": "CONFIG_PID_NS",
    "User namespace": "CONFIG_USER_NS",
    "Network namespace": "CONFIG_NET_NS",
    "Multiple /dev/pts instances": "CONFIG_DEVPTS_MULTIPLE_INSTANCES",
    "Cgroups": "CONFIG_CGROUPS",
    "Cgroup namespace": "probe:unshare:cgroup",
    "Cgroup device": "CONFIG_CGROUP_DEVICE",
    "Cgroup sched": "CONFIG_CGROUP_SCHED",
    "Cgroup cpu account": "CONFIG_CGROUP_CPUACCT",
    "Cgroup memory controller": "CONFIG_MEMCG",
    "Cgroup cpuset": "CONFIG_CPUSETS",
    "Veth pair device": "CONFIG_VETH",
    "Macvlan": "CONFIG_MACVLAN",
    "Vlan": "CONFIG_VLAN_8021Q",
    "Bridges": "CONFIG_BRIDGE",
    "Advanced netfilter": "CONFIG_NETFILTER_ADVANCED",
    "FUSE (for use with lxcfs)": "CONFIG_FUSE_FS",
    "checkpoint restore": "CONFIG_CHECKPOINT_RESTORE",
}
# lxc labels we do not compare, and why.
LXC_IGNORED = {
    # Hard-coded "enabled" on every kernel since 2.6.33 (file capabilities are always built).
    "File capabilities",
    # The closing usage note.
    "Note ",
    "usage ",
}

# moby options Gantry does not check: Docker storage drivers it does not have, IPVS (swarm
# load balancing), IPsec for encrypted overlay networks, and the vsyscall mode.
MOBY_NOT_CHECKED = {
    "AUFS_FS", "BTRFS_FS", "BTRFS_FS_POSIX_ACL", "BLK_DEV_DM", "DM_THIN_PROVISIONING",
    "EXT3_FS", "EXT3_FS_XATTR", "EXT3_FS_POSIX_ACL", "EXT3_FS_SECURITY",
    "IP_VS", "IP_VS_NFCT", "IP_VS_PROTO_TCP", "IP_VS_PROTO_UDP", "IP_VS_RR",
    "NETFILTER_XT_MATCH_IPVS",
    "CRYPTO", "CRYPTO_AEAD", "CRYPTO_GCM", "CRYPTO_SEQIV", "CRYPTO_GHASH",
    "XFRM", "XFRM_USER", "XFRM_ALGO", "INET_ESP", "INET_XFRM_MODE_TRANSPORT",
    "LEGACY_VSYSCALL_NATIVE", "LEGACY_VSYSCALL_EMULATE", "LEGACY_VSYSCALL_NONE",
}  # fmt: skip
# moby lines about things Gantry has no use for.
MOBY_IGNORED = {"/dev/zfs", "zfs command", "zpool command"}

KCONFIG_VALUE = {"enabled": "y", "enabled (as module)": "m", "missing": "n"}


def run_anchor(shell: str, script: Path) -> str:
    """Run an anchor without a terminal and with NO_COLOR (this moby version ignores it, so
    strip the escapes too)."""
    result = subprocess.run(
        [shell, str(script)],
        check=False,  # the anchors exit non-zero when the kernel lacks something
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "NO_COLOR": "1",
        },
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert "unable to retrieve kernel configuration" not in result.stderr
    assert "cannot find kernel config" not in result.stderr
    return ANSI.sub("", result.stdout)


@pytest.fixture(scope="module")
def ours() -> dict[str, Any]:
    report = kc.run_checks(features=[name for name, _description, _default in kc.FEATURES])
    assert report["config"]["readable"], "the agreement test needs this machine's config"
    return report


def items_of(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in report["items"]}


def parse_lxc(text: str) -> tuple[dict[str, str], dict[str, list[str]], list[str]]:
    """``Label: value`` pairs, the mount point lists, and the free-standing lines."""
    pairs: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    loose: list[str] = []
    current_list: str | None = None
    for line in text.splitlines():
        if not line.strip() or re.match(r"^--- .* ---$", line):
            current_list = None
            continue
        if line.startswith(" - ") and current_list is not None:
            lists[current_list].append(line[3:].strip())
            continue
        label, sep, value = line.partition(":")
        if sep and value.strip() == "" and "mount points" in label:
            current_list = label
            lists[label] = []
        elif sep:
            pairs[label] = value.strip()
        else:
            loose.append(line.strip())
    return pairs, lists, loose


def parse_moby(text: str) -> dict[str, str]:
    pairs = {}
    for line in text.splitlines():
        match = re.match(r"^\s*- (.+?): (.+)$", line)
        if match:
            pairs[match.group(1)] = match.group(2).strip()
    return pairs


def our_kconfig_value(items: dict[str, dict[str, Any]], item_id: str) -> str | None:
    item = items.get(item_id)
    return None if item is None else item["value"]


def test_agrees_with_lxc_checkconfig(anchors: Path, ours: dict[str, Any]) -> None:
    pairs, lists, loose = parse_lxc(run_anchor("sh", anchors / "lxc-checkconfig"))
    items = items_of(ours)
    compared = []
    for label, value in pairs.items():
        if label in LXC_IGNORED:
            continue
        item_id = LXC_LABELS.get(label) or (label if label.startswith("CONFIG_") else None)
        if item_id is None and label.startswith("Cgroup v1 "):
            continue  # the v1 hierarchy lines, compared below
        assert item_id is not None, f"lxc-checkconfig line {label!r} has no counterpart in the map"
        if item_id == "CONFIG_MEMCG" and item_id not in items:
            item_id = "CONFIG_CGROUP_MEM_RES_CTLR"  # kernels before 3.6
        item = items.get(item_id)
        assert item is not None, f"{label!r} -> {item_id} is not in our report"
        enabled = value.split(",")[0].strip()
        if item["kind"] == "probe":
            assert (enabled == "enabled") == (item["status"] == "ok"), (label, value, item)
        else:
            assert (enabled == "enabled") == (item["value"] in ("y", "m")), (label, value, item)
            # ", loaded"/", not loaded" only means something for modules (lxc greps lsmod).
            module = item["module"]
            if ", " in value and module and module["state"] in ("loaded", "not_loaded"):
                assert value.endswith(", not loaded") == (module["state"] == "not_loaded")
        compared.append(label)

    v1 = ours["cgroup"]["v1"]
    v2_mount = ours["cgroup"]["v2"]["mount"]
    assert set(lists["Cgroup v1 mount points"]) == set(v1.values())
    assert lists["Cgroup v2 mount points"] == ([v2_mount] if v2_mount else [])
    compared += ["Cgroup v1 mount points", "Cgroup v2 mount points"]
    if v2_mount != "/sys/fs/cgroup":  # lxc only looks at v1 hierarchies when not unified
        assert ("Cgroup v1 systemd controller" in pairs) == ("name=systemd" not in v1)
        assert ("Cgroup v1 freezer controller" in pairs) == ("freezer" not in v1)
        assert ("Cgroup v1 clone_children flag" in pairs) == bool(v1)
        compared += [
            "Cgroup v1 systemd controller",
            "Cgroup v1 freezer controller",
            "clone_children",
        ]

    # The free-standing lines are about newuidmap/newgidmap (printed when USER_NS is set).
    for tool in ("newuidmap", "newgidmap"):
        item = items[f"binary:{tool}"]
        if f"{tool} is not installed" in loose:
            assert item["value"] is None
        elif f"Warning: {tool} is not setuid-root" in loose:
            assert item["value"] is not None and "not setuid" in item["detail"]
        elif pairs.get("User namespace") == "enabled":
            assert item["status"] == "ok", item
        compared.append(tool)
    leftover = [
        line
        for line in loose
        if not re.match(r"^(Warning: )?new[ug]idmap is (not installed|not setuid-root)$", line)
    ]
    assert leftover == [] or all(line.startswith("LXC version") for line in leftover), leftover
    assert len(compared) >= 30, compared


def test_agrees_with_moby_check_config(anchors: Path, ours: dict[str, Any]) -> None:
    pairs = parse_moby(run_anchor("bash", anchors / "check-config.sh"))
    items = items_of(ours)
    version = kc._version_tuple(ours["kernel"]["version"])
    compared = []
    for label, value in pairs.items():
        if label in MOBY_IGNORED:
            continue
        if label.startswith("CONFIG_"):
            option = label[len("CONFIG_") :]
            if option in MOBY_NOT_CHECKED:
                continue
            ours_value = our_kconfig_value(items, label)
            if ours_value is None:
                # Only options that cannot exist in this kernel version may be absent from our
                # report, and there moby must agree that the option is not set.
                spec = next((s for s in kc.KCONFIG if s["option"] == option), None)
                assert spec is not None, f"moby checks {label}, which Gantry does not know"
                assert version is not None
                too_old = spec["since"] is not None and version < spec["since"]
                too_new = spec["before"] is not None and version >= spec["before"]
                gated = too_old or too_new
                assert gated, f"{label} is in the table but missing from the report"
                assert value == "missing", (label, value)
            else:
                assert KCONFIG_VALUE[value] == ours_value, (label, value, ours_value)
        elif label == "cgroup hierarchy":
            expected = "unified" if value == "cgroupv2" else ("legacy", "hybrid")
            assert ours["cgroup"]["layout"] in expected, (value, ours["cgroup"]["layout"])
        elif label == "/proc/sys/kernel/keys/root_maxkeys":
            assert items["sysctl:kernel.keys.root_maxkeys"]["value"] == value
        elif label == "apparmor":
            assert items["lsm:apparmor"]["value"] == "active"
            tools = value == "enabled and tools installed"
            assert (items["binary:apparmor_parser"]["value"] is not None) == tools
        else:
            raise AssertionError(f"check-config.sh line {label!r} has no counterpart")
        compared.append(label)
    if "apparmor" not in pairs:  # moby only prints it when AppArmor is enabled
        assert items["lsm:apparmor"]["value"] != "active"
    assert len(compared) >= 45, compared
