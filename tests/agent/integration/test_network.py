"""gantry.network against the real kernel and Debian's CNI plugins (bridge, host-local,
portmap, firewall, macvlan, loopback): namespaces, veths, bridges, iptables and nftables."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import network_support as support
import pytest
from gantry.network import (
    CNIError,
    EndpointRequest,
    InvalidNetworkInput,
    NetworkConfigList,
    NetworkInUse,
    NetworkManager,
    RuntimeConf,
    parse_ports,
)
from gantry.network import netns as pinned

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(
        not Path("/usr/lib/cni/bridge").exists(), reason="containernetworking-plugins missing"
    ),
]


@pytest.fixture
def env(tmp_path: Path, no_leftovers: None) -> Iterator[support.NetEnv]:
    with support.net_env(tmp_path) as made:
        yield made


def test_default_network_peers_reach_by_ip_and_name_other_network_cannot(
    env: support.NetEnv,
) -> None:
    alpha = env.attach("alpha")
    beta = env.attach("beta", networks=(EndpointRequest(env.config.default_network, ("db",)),))
    other_net = env.network("other")
    gamma = env.attach("gamma", networks=(EndpointRequest(other_net),))
    assert alpha.netns_path and beta.netns_path and gamma.netns_path

    # by IP, both ways
    assert support.ping(alpha.netns_path, beta.endpoints[0].ip)
    assert support.ping(beta.netns_path, alpha.endpoints[0].ip)
    # by name and alias, through the hosts file the manager keeps current
    by_name = support.in_container(alpha.netns_path, env.hosts("alpha"), "getent", "hosts", "beta")
    assert by_name.stdout.split()[0] == beta.endpoints[0].ip, by_name
    for name in ("beta", "db"):
        seen = support.in_container(
            alpha.netns_path, env.hosts("alpha"), "busybox", "ping", "-c", "1", "-W", "2", name
        )
        assert seen.returncode == 0, seen
    back = support.in_container(beta.netns_path, env.hosts("beta"), "getent", "hosts", "alpha")
    assert back.stdout.split()[0] == alpha.endpoints[0].ip
    # the other network's member knows neither name nor route
    assert "beta" not in env.hosts("gamma").read_text()
    assert support.ping(gamma.netns_path, gamma.endpoints[0].gateway)
    assert not support.ping(gamma.netns_path, alpha.endpoints[0].ip)
    assert not support.ping(alpha.netns_path, gamma.endpoints[0].ip)

    # a member that leaves disappears from its peers' hosts files
    env.manager.detach(beta.container_id)
    assert "beta" not in env.hosts("alpha").read_text()


def test_none_mode_has_only_loopback_and_it_is_up(env: support.NetEnv) -> None:
    att = env.attach("lonely", mode="none")
    assert att.endpoints == ()
    assert att.netns_path
    shown = support.in_netns(att.netns_path, "ip", "-o", "link")
    assert [line.split(":")[1].strip() for line in shown.stdout.splitlines()] == ["lo"]
    assert "UP" in shown.stdout
    assert support.ping(att.netns_path, "127.0.0.1")


def test_host_mode_has_no_namespace_and_keeps_host_resolvers(env: support.NetEnv) -> None:
    att = env.attach("hosty", mode="host")
    assert att.netns_path is None
    assert att.namespace_entry() is None
    assert att.ports == ()
    host = Path("/etc/resolv.conf").read_text()
    for line in host.splitlines():
        if line.startswith("nameserver"):
            assert line in att.resolv_text


def test_container_mode_joins_the_peers_namespace(env: support.NetEnv) -> None:
    pod = env.attach("pod")
    side = env.attach("side", mode=f"container:{pod.container_id}")
    assert side.netns_path == pod.netns_path
    assert side.namespace_entry() == {"type": "network", "path": pod.netns_path}
    assert side.hosts_text == pod.hosts_text
    assert env.hosts("side").read_text() == env.hosts("pod").read_text()
    with pytest.raises(InvalidNetworkInput, match="network_mode"):
        env.attach("nobody", mode="container:no-such-container")


def test_static_ip_and_two_networks_give_two_interfaces(env: support.NetEnv) -> None:
    front = env.network("front")
    back = env.network("back")
    subnet = env.manager.inspect_network(back).network
    assert subnet is not None
    wanted = subnet.subnet.rsplit(".", 1)[0] + ".77"
    att = env.attach("multi", networks=(EndpointRequest(front), EndpointRequest(back, ip=wanted)))
    assert [e.ifname for e in att.endpoints] == ["eth0", "eth1"]
    assert att.endpoints[1].ip == wanted
    shown = support.in_netns(att.netns_path or "", "ip", "-o", "-4", "addr", "show", "eth1")
    assert f"{wanted}/24" in shown.stdout
    inspected = env.manager.inspect_network(back).to_dict()
    assert [c["addresses"] for c in inspected["containers"]] == [[f"{wanted}/24"]]
    with pytest.raises(InvalidNetworkInput, match=r"networks\[0\].ip"):
        env.attach("clash", networks=(EndpointRequest(back, ip="192.0.2.300"),))


def _httpd(netns: str, docroot: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["nsenter", f"--net={netns}", "busybox", "httpd", "-f", "-p", "80", "-h", str(docroot)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _get(url: str) -> str:
    # The server starts asynchronously: retry until it answers (no timing is asserted).
    last: Exception | None = None
    for _attempt in range(50):
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return str(answer.read().decode())
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered: {last}")


UDP_ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
while True:
    data, peer = s.recvfrom(100)
    s.sendto(b"echo " + data, peer)
"""


def test_published_ports_answer_on_host_loopback(env: support.NetEnv) -> None:
    docroot = env.root / "www"
    docroot.mkdir()
    (docroot / "index.html").write_text(f"hello {env.token}\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        fixed = str(probe.getsockname()[1])
    ports = parse_ports([f"127.0.0.1:{fixed}:80", "127.0.0.1::80", "9999/udp"])
    web = env.attach("web", ports=tuple(ports))
    assert web.netns_path
    tcp = [p for p in web.ports if p.protocol == "tcp"]
    assert [(p.host_ip, p.container_port) for p in tcp] == [("127.0.0.1", 80)] * 2
    assert tcp[0].host_port == int(fixed)
    random_port = [tcp[1].host_port]
    assert random_port[0] > 0 and random_port[0] != int(fixed)
    assert [(p.host_ip, p.container_port) for p in web.ports[2:]] == [("", 9999)]
    assert web.ports[2].host_port > 0
    # the actual bindings are what attachment() reports later
    again = NetworkManager(env.config).attachment(web.container_id)
    assert again is not None and again.ports == web.ports

    server = _httpd(web.netns_path, docroot)
    udp = subprocess.Popen(
        [
            "nsenter",
            f"--net={web.netns_path}",
            "python3",
            "-c",
            UDP_ECHO,
        ],
    )
    try:
        assert _get(f"http://127.0.0.1:{fixed}/") == f"hello {env.token}\n"
        assert _get(f"http://127.0.0.1:{random_port[0]}/") == f"hello {env.token}\n"
        udp_port = next(p.host_port for p in web.ports if p.protocol == "udp")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            reply = b""
            for _attempt in range(20):
                sock.sendto(b"ping", ("127.0.0.1", udp_port))
                try:
                    reply = sock.recv(100)
                    break
                except TimeoutError:
                    continue
        assert reply == b"echo ping"
    finally:
        for proc in (server, udp):
            proc.kill()
            proc.wait()
    # a host port already published by another container is refused, naming the field
    with pytest.raises(InvalidNetworkInput, match=r"ports\[0\]"):
        env.attach("copycat", ports=tuple(parse_ports([f"127.0.0.1:{fixed}:80"])))
    assert not Path(env.manager.netns_path(env.cid("copycat"))).exists()


def test_del_after_restart_removes_veth_reservation_and_port_rules(env: support.NetEnv) -> None:
    att = env.attach("restart", ports=tuple(parse_ports(["127.0.0.1::80"])))
    veths = set(env.veths)
    assert veths and veths <= support.links()
    ip = att.endpoints[0].ip
    reservation = env.root / "network" / "ipam" / env.config.default_network / ip
    assert reservation.exists()
    assert att.container_id in support.run(["iptables-save", "-t", "nat"]).stdout

    fresh = NetworkManager(env.config)  # a restarted agent: only the disk is shared
    fresh.detach(att.container_id)
    assert not (veths & support.links())
    assert not reservation.exists()
    assert att.container_id not in support.run(["iptables-save"]).stdout
    assert att.container_id not in support.run(["iptables-save", "-t", "nat"]).stdout
    assert not Path(att.netns_path or "").exists()
    assert list(fresh.cni.cached_attachments()) == []


def test_recovery_removes_only_what_dead_containers_left(env: support.NetEnv) -> None:
    keep = env.attach("keeper")
    lost = env.attach("lost", ports=tuple(parse_ports(["127.0.0.1::80"])))
    lost_ip = lost.endpoints[0].ip
    ipam = env.root / "network" / "ipam" / env.config.default_network
    # A crash: the agent is gone; a new one only knows that "keeper" still exists.
    report = NetworkManager(env.config).recover(live=[keep.container_id])
    assert report.records == [lost.container_id]
    assert not (ipam / lost_ip).exists()
    assert not Path(lost.netns_path or "").exists()
    assert lost.container_id not in support.run(["iptables-save", "-t", "nat"]).stdout
    # the survivor is untouched and still works
    assert (ipam / keep.endpoints[0].ip).exists()
    assert keep.container_id in support.run(["iptables-save", "-t", "nat"]).stdout
    assert support.ping(keep.netns_path or "", keep.endpoints[0].gateway)
    assert "lost" not in env.hosts("keeper").read_text()
    # an orphan cache entry and IPAM file (no record: a crash mid-ADD) are cleaned too
    orphan_ns = env.manager.netns_path(env.cid("orphan"))
    pinned.create(orphan_ns)
    conf = env.manager.inspect_network(env.config.default_network)
    assert conf.network is not None
    env.manager.cni.add(
        conf.network.conflist(env.root / "network" / "ipam"),
        RuntimeConf(env.cid("orphan"), str(orphan_ns), "eth0"),
    )
    env.note_veths()
    second = NetworkManager(env.config).recover(live=[keep.container_id])
    assert second.attachments == [env.cid("orphan")]
    assert second.namespaces == [env.cid("orphan")]
    assert support.ping(keep.netns_path or "", keep.endpoints[0].gateway)


def test_network_lifecycle_refuses_removing_a_network_in_use(env: support.NetEnv) -> None:
    name = env.network("life", labels={"team": "web"}, ip_range="")
    info = env.manager.inspect_network(name)
    assert info.network is not None and info.network.labels == {"team": "web"}
    assert name in [n.name for n in env.manager.list_networks()]
    att = env.attach("member", networks=(EndpointRequest(name),))
    bridge = info.network.bridge
    assert bridge in support.links()
    nft = support.run(["nft", "list", "table", "inet", env.config.nft_table]).stdout
    assert bridge in nft
    with pytest.raises(NetworkInUse, match=att.container_id):
        env.manager.remove_network(name)
    env.manager.detach(att.container_id)
    env.manager.remove_network(name)
    assert bridge not in support.links()
    assert name not in [n.name for n in env.manager.list_networks()]
    nft = support.run(["nft", "list", "table", "inet", env.config.nft_table]).stdout
    assert bridge not in nft


def test_ip_range_and_internal_network(env: support.NetEnv) -> None:
    subnet = env.subnet()
    prefix = subnet.rsplit(".", 1)[0]
    name = env.network("inner", subnet=subnet, ip_range=f"{prefix}.128/25", internal=True)
    one = env.attach("one", networks=(EndpointRequest(name),))
    two = env.attach("two", networks=(EndpointRequest(name),))
    assert int(one.endpoints[0].ip.rsplit(".", 1)[1]) >= 129
    assert support.ping(one.netns_path or "", two.endpoints[0].ip)
    routes = support.in_netns(one.netns_path or "", "ip", "route").stdout
    assert "default" not in routes
    nft = support.run(["nft", "list", "table", "inet", env.config.nft_table]).stdout
    assert "oifname != " in nft and "drop" in nft
    with pytest.raises(InvalidNetworkInput, match="ports"):
        env.attach("pub", networks=(EndpointRequest(name),), ports=tuple(parse_ports(["80"])))


def test_macvlan_network_on_a_test_parent(env: support.NetEnv) -> None:
    parent, peer = f"gpv{env.token}", f"gpw{env.token}"
    made = support.run(["ip", "link", "add", parent, "type", "veth", "peer", "name", peer])
    assert made.returncode == 0, made.stderr
    try:
        # a veth has carrier only when both ends are up; macvlan children follow it
        support.run(["ip", "link", "set", peer, "up"])
        support.run(["ip", "link", "set", parent, "up"])
        name = env.network("mvl", driver="macvlan", parent=parent, bridge="")
        try:
            one = env.attach("mv1", networks=(EndpointRequest(name),))
            two = env.attach("mv2", networks=(EndpointRequest(name),))
            assert support.ping(one.netns_path or "", two.endpoints[0].ip)
            shown = support.in_netns(one.netns_path or "", "ip", "-d", "link", "show", "eth0")
            assert "macvlan mode bridge" in shown.stdout
        finally:
            for att in env.manager.attachments():
                env.manager.detach(att.container_id)
    finally:
        support.run(["ip", "link", "delete", parent])


def test_hundred_attach_detach_cycles_leave_nothing(env: support.NetEnv) -> None:
    before = support.links()
    for index in range(100):
        att = env.attach(
            "cycle", ports=tuple(parse_ports(["127.0.0.1::80/udp"])) if index % 2 else ()
        )
        env.manager.detach(att.container_id)
    assert support.links() - before <= {env.config.default_bridge}
    left = env.leftovers()
    # the network itself stays (its bridge and isolation table); nothing of the containers
    assert left.pop("links") == [env.config.default_bridge]
    assert left.pop("nft") == [f"table inet {env.config.nft_table}"]
    assert left == {}
    ipam = env.root / "network" / "ipam" / env.config.default_network
    assert sorted(p.name for p in ipam.iterdir() if p.name[0].isdigit()) == []


def test_cni_executor_verbs_and_errors(env: support.NetEnv) -> None:
    cni = env.manager.cni
    assert "1.0.0" in cni.version("bridge")
    path = env.manager.netns_path(env.cid("raw"))
    pinned.create(path)
    try:
        subnet = env.subnet()
        conf = NetworkConfigList.from_dict(
            {
                "cniVersion": "1.0.0",
                "name": f"raw-{env.token}",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": f"graw{env.token}",
                        "isGateway": True,
                        "ipam": {
                            "type": "host-local",
                            "subnet": subnet,
                            "dataDir": str(env.root / "rawipam"),
                        },
                    },
                    {"type": "firewall", "backend": "iptables"},
                ],
            }
        )
        rt = RuntimeConf(env.cid("raw"), str(path), "eth0")
        result = cni.add(conf, rt)
        env.note_veths()
        assert result["ips"][0]["address"].startswith(subnet.rsplit(".", 1)[0])
        cni.check(conf, rt)
        # a broken link makes CHECK fail with the plugin's own error
        support.in_netns(str(path), "ip", "link", "set", "eth0", "down")
        cni.delete(conf, rt)
        assert cni.cached(conf.name, rt.container_id, "eth0") is None
        with pytest.raises(CNIError) as bad:
            cni.add(
                NetworkConfigList.from_dict(
                    {
                        "cniVersion": "1.0.0",
                        "name": "bad",
                        "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}}],
                    }
                ),
                rt,
            )
        assert bad.value.code != 0 and bad.value.msg
        with pytest.raises(CNIError, match="not found"):
            cni.find_plugin("no-such-plugin")
    finally:
        pinned.remove(path)
        support.run(["ip", "link", "delete", f"graw{env.token}"])
        shutil.rmtree(env.root / "rawipam", ignore_errors=True)


def test_foreign_cni_config_dir_is_listed_and_usable(env: support.NetEnv) -> None:
    conf_dir = env.config.config_dirs[0]
    conf_dir.mkdir(parents=True)
    subnet = env.subnet()
    name = f"ext-{env.token}"
    (conf_dir / "10-ext.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": name,
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": f"gext{env.token}",
                        "isGateway": True,
                        "ipam": {
                            "type": "host-local",
                            "subnet": subnet,
                            "dataDir": str(env.root / "network" / "ipam"),
                        },
                    }
                ],
            }
        )
    )
    (conf_dir / "20-broken.conflist").write_text("{not json")
    listed = {n.name: n for n in env.manager.list_networks()}
    assert listed[name].driver == "cni"
    att = env.attach("ext", networks=(EndpointRequest(name),))
    assert att.endpoints[0].ip.startswith(subnet.rsplit(".", 1)[0])
    with pytest.raises(Exception, match="not Gantry's"):
        env.manager.remove_network(name)
    env.manager.detach(att.container_id)
    support.run(["ip", "link", "delete", f"gext{env.token}"])


CRASHING_AGENT = """
import json, os, signal, sys
from pathlib import Path
from gantry.network import AttachRequest, NetworkConfig, NetworkManager, parse_ports
raw = json.loads(sys.argv[1])
raw["root"] = Path(raw["root"])
raw["plugin_dirs"] = tuple(Path(d) for d in raw["plugin_dirs"])
raw["config_dirs"] = tuple(Path(d) for d in raw["config_dirs"])
config = NetworkConfig(**raw)
manager = NetworkManager(config)
for cid in sys.argv[2:]:
    manager.attach(AttachRequest(cid, name=cid, ports=tuple(parse_ports(["127.0.0.1::80"]))))
print("attached", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_of_the_agent_then_recovery_cleans_what_it_left(env: support.NetEnv) -> None:
    ids = [env.cid("k1"), env.cid("k2")]
    config = {
        k: [str(d) for d in v] if k.endswith("dirs") else (str(v) if k == "root" else v)
        for k, v in env.config.__dict__.items()
    }
    agent = support.run(
        [sys.executable, "-c", CRASHING_AGENT, json.dumps(config), *ids], timeout=120
    )
    assert agent.returncode == -9 and "attached" in agent.stdout, agent.stderr
    restarted = NetworkManager(env.config)
    left = {a.container_id for a in restarted.attachments()}
    assert left == set(ids)
    env.note_veths()
    assert env.veths & support.links()
    report = restarted.recover(live=())
    assert sorted(report.records) == sorted(ids)
    assert restarted.attachments() == []
    assert not (env.veths & support.links())
    nat = support.run(["iptables-save", "-t", "nat"]).stdout
    assert not any(cid in nat for cid in ids)
    ipam = env.root / "network" / "ipam" / env.config.default_network
    assert [p.name for p in ipam.iterdir() if p.name[0].isdigit()] == []
