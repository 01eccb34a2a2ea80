"""gantry.network.cni: configuration lists, and the CNI protocol as seen by a plugin.

The protocol tests run real executables: small recording plugins written by the test (the
real plugins need root and run in tests/agent/integration/test_network.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from gantry.network import CNI, CNIError, InvalidNetworkInput, NetworkConfigList, RuntimeConf
from gantry.network.cni import load_config_dirs

RECORDER = """#!{python}
import json, os, sys
conf = json.load(sys.stdin)
log = {log!r}
with open(log, "a") as out:
    env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
    out.write(json.dumps({{"type": conf.get("type"), "env": env, "conf": conf}}) + "\\n")
cmd = os.environ["CNI_COMMAND"]
if cmd == "VERSION":
    print(json.dumps({{"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", "1.1.0"]}}))
    sys.exit(0)
if conf.get("fail") == cmd:
    print(json.dumps({{"cniVersion": "1.0.0", "code": 7, "msg": "bad config", "details": "x=1"}}))
    sys.exit(1)
if cmd == "ADD":
    prev = conf.get("prevResult") or {{"cniVersion": "1.0.0", "ips": []}}
    prev = dict(prev)
    prev["ips"] = list(prev.get("ips", [])) + [{{"address": conf["addr"]}}]
    print(json.dumps(prev))
"""


@pytest.fixture
def plugins(tmp_path: Path) -> tuple[Path, Path]:
    plugin_dir = tmp_path / "bin"
    plugin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    for name in ("rec-a", "rec-b"):
        path = plugin_dir / name
        path.write_text(RECORDER.format(python=sys.executable, log=str(log)))
        path.chmod(0o755)
    (plugin_dir / "crasher").write_text("#!/bin/sh\necho 'not json' >&2\nexit 3\n")
    (plugin_dir / "crasher").chmod(0o755)
    return plugin_dir, log


def calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def chain(version: str = "1.0.0", **extra: object) -> NetworkConfigList:
    return NetworkConfigList.from_dict(
        {
            "cniVersion": version,
            "name": "testnet",
            "plugins": [
                {"type": "rec-a", "addr": "10.0.0.2/24", "capabilities": {"portMappings": True}},
                {"type": "rec-b", "addr": "10.0.0.3/24", **extra},
            ],
        }
    )


def test_add_chains_prev_result_sets_env_and_runtime_config(
    plugins: tuple[Path, Path], tmp_path: Path
) -> None:
    plugin_dir, log = plugins
    cni = CNI([tmp_path / "missing", plugin_dir], tmp_path / "cache")
    ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    rt = RuntimeConf(
        "c1",
        "/run/netns/x",
        "eth0",
        args=(("K8S_POD_NAME", "p"),),
        capability_args={"portMappings": ports},
    )
    result = cni.add(chain(), rt)
    assert [ip["address"] for ip in result["ips"]] == ["10.0.0.2/24", "10.0.0.3/24"]
    first, second = calls(log)
    assert first["env"] == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "K8S_POD_NAME=p",
        "CNI_PATH": f"{tmp_path / 'missing'}:{plugin_dir}",
    }
    assert first["conf"]["name"] == "testnet" and first["conf"]["cniVersion"] == "1.0.0"
    assert first["conf"]["runtimeConfig"] == {"portMappings": ports}
    assert "prevResult" not in first["conf"]
    assert "runtimeConfig" not in second["conf"]  # rec-b did not ask for portMappings
    assert second["conf"]["prevResult"]["ips"] == [{"address": "10.0.0.2/24"}]
    cached = cni.cached("testnet", "c1", "eth0")
    assert cached is not None and cached.result == result and cached.netns == "/run/netns/x"


def test_del_after_restart_uses_cached_config_and_result_in_reverse(
    plugins: tuple[Path, Path], tmp_path: Path
) -> None:
    plugin_dir, log = plugins
    rt = RuntimeConf("c2", "/run/netns/y", "eth1", capability_args={"portMappings": []})
    result = CNI([plugin_dir], tmp_path / "cache").add(chain(), rt)
    log.unlink()
    fresh = CNI([plugin_dir], tmp_path / "cache")  # a restarted agent
    changed = chain(addr_changed=True)
    fresh.delete(changed, RuntimeConf("c2", "/run/netns/y", "eth1"))
    seen = calls(log)
    assert [c["type"] for c in seen] == ["rec-b", "rec-a"]
    assert all(c["env"]["CNI_COMMAND"] == "DEL" for c in seen)
    assert all(c["conf"]["prevResult"] == result for c in seen)
    assert "addr_changed" not in seen[0]["conf"]  # the config ADD used, from the cache
    assert fresh.cached("testnet", "c2", "eth1") is None


def test_check_uses_cached_result_and_skips_when_disabled(
    plugins: tuple[Path, Path], tmp_path: Path
) -> None:
    plugin_dir, log = plugins
    cni = CNI([plugin_dir], tmp_path / "cache")
    rt = RuntimeConf("c3", "/n", "eth0")
    with pytest.raises(CNIError, match="no cached result"):
        cni.check(chain(), rt)
    result = cni.add(chain(), rt)
    log.unlink()
    cni.check(chain(), rt)
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in calls(log)] == [
        ("rec-a", "CHECK"),
        ("rec-b", "CHECK"),
    ]
    assert calls(log)[0]["conf"]["prevResult"] == result
    log.unlink()
    disabled = NetworkConfigList.from_dict({**json.loads(chain().raw), "disableCheck": True})
    cni.check(disabled, rt)
    assert calls(log) == []


def test_plugin_error_is_parsed_and_a_failed_add_is_rolled_back(
    plugins: tuple[Path, Path], tmp_path: Path
) -> None:
    plugin_dir, log = plugins
    cni = CNI([plugin_dir], tmp_path / "cache")
    with pytest.raises(CNIError) as bad:
        cni.add(chain(fail="ADD"), RuntimeConf("c4", "/n", "eth0"))
    assert (bad.value.code, bad.value.msg, bad.value.details) == (7, "bad config", "x=1")
    assert "rec-b ADD failed (code 7): bad config (x=1)" in str(bad.value)
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in calls(log)] == [
        ("rec-a", "ADD"),
        ("rec-b", "ADD"),
        ("rec-b", "DEL"),
        ("rec-a", "DEL"),
    ]
    assert cni.cached("testnet", "c4", "eth0") is None


def test_del_runs_every_plugin_even_when_one_fails(
    plugins: tuple[Path, Path], tmp_path: Path
) -> None:
    plugin_dir, log = plugins
    cni = CNI([plugin_dir], tmp_path / "cache")
    with pytest.raises(CNIError, match="rec-b DEL"):
        cni.delete(chain(fail="DEL"), RuntimeConf("c5", "", "eth0"))
    assert [c["type"] for c in calls(log)] == ["rec-b", "rec-a"]


def test_non_json_failure_and_missing_plugin(plugins: tuple[Path, Path], tmp_path: Path) -> None:
    plugin_dir, _log = plugins
    cni = CNI([plugin_dir], tmp_path / "cache")
    conf = NetworkConfigList.from_dict(
        {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "crasher"}]}
    )
    with pytest.raises(CNIError, match="exit status 3: not json"):
        cni.add(conf, RuntimeConf("c6", "/n"))
    with pytest.raises(CNIError, match="'nope' not found"):
        cni.find_plugin("nope")


def test_version_status_and_gc(plugins: tuple[Path, Path], tmp_path: Path) -> None:
    plugin_dir, log = plugins
    cni = CNI([plugin_dir], tmp_path / "cache")
    assert cni.version("rec-a") == ("1.0.0", "1.1.0")
    old, new = chain("1.0.0"), chain("1.1.0")
    for cid in ("keep", "stale"):
        cni.add(new, RuntimeConf(cid, "/n", "eth0"))
    log.unlink()
    cni.status(old)  # no STATUS before spec 1.1
    assert calls(log) == []
    cni.status(new)
    assert [c["env"]["CNI_COMMAND"] for c in calls(log)] == ["STATUS", "STATUS"]
    log.unlink()
    assert cni.gc(new, [("keep", "eth0")]) == ["stale"]
    seen = calls(log)
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in seen] == [
        ("rec-b", "DEL"),
        ("rec-a", "DEL"),
        ("rec-a", "GC"),
        ("rec-b", "GC"),
    ]
    assert seen[0]["env"]["CNI_CONTAINERID"] == "stale"
    assert seen[2]["conf"]["cni.dev/valid-attachments"] == [
        {"containerID": "keep", "ifname": "eth0"}
    ]
    assert [c.container_id for c in cni.cached_attachments()] == ["keep"]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "src"),
        ({"cniVersion": "1.0.0", "plugins": [{"type": "x"}]}, "src: name"),
        ({"name": "n", "cniVersion": "9.9.9", "plugins": [{"type": "x"}]}, "src: cniVersion"),
        ({"name": "n", "cniVersion": "1.0.0", "plugins": []}, "src: plugins"),
        ({"name": "n", "cniVersion": "1.0.0"}, "src: plugins"),
        (
            {"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "../x"}]},
            "src: plugins[0].type",
        ),
        (
            {"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "x", "capabilities": []}]},
            "src: plugins[0].capabilities",
        ),
        (
            {"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "x"}], "disableCheck": "yes"},
            "src: disableCheck",
        ),
    ],
)
def test_conflist_validation_names_the_field(doc: object, field: str) -> None:
    with pytest.raises(InvalidNetworkInput) as bad:
        NetworkConfigList.from_dict(doc, "src")
    assert bad.value.field == field


def test_single_plugin_conf_becomes_a_list() -> None:
    conf = NetworkConfigList.from_dict(
        {"cniVersion": "0.4.0", "name": "old", "type": "bridge", "bridge": "br9"}
    )
    assert conf.plugins == ({"type": "bridge", "bridge": "br9"},)


def test_config_dirs_first_name_wins_and_bad_files_are_reported(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    good = {"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "bridge"}]}
    (one / "10-net.conflist").write_text(json.dumps(good))
    (one / "05-broken.conf").write_text("{")
    (one / "README").write_text("ignored")
    (two / "00-net.conflist").write_text(json.dumps(good))
    (two / "01-other.json").write_text(json.dumps({**good, "name": "other"}))
    scan = load_config_dirs([one, two, tmp_path / "absent"])
    assert sorted(scan.networks) == ["net", "other"]
    assert scan.networks["net"].source == str(one / "10-net.conflist")
    assert set(scan.errors) == {str(one / "05-broken.conf"), str(two / "00-net.conflist")}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"container_id": "bad/id", "netns": ""}, "container_id"),
        ({"container_id": "ok", "netns": "", "ifname": "a-name-longer-than-15"}, "ifname"),
        ({"container_id": "ok", "netns": "", "args": (("K", "a;b"),)}, "args"),
    ],
)
def test_runtime_conf_validation(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidNetworkInput) as bad:
        RuntimeConf(**kwargs)  # type: ignore[arg-type]
    assert bad.value.field == field
