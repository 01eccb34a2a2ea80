"""Container networking through a real agent and the `gantry` CLI (issue 7's judgement):
names and isolation on bridge networks, the none/host/container: modes, published TCP and
UDP ports answering on the host's loopback, 100 start/stop cycles and a `kill -9` of the
agent leaving no veth, IPAM reservation or firewall rule behind.

Each agent has its own default bridge, subnet, nftables table and CNI config dir
(agent_support.running_agent); everything it made is removed on the way out."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import agent_support as ags
import pytest
import rootfs_support as rs
from gantry.network import NetworkManager

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
    pytest.mark.skipif(not Path("/usr/lib/cni/bridge").exists(), reason="needs CNI plugins"),
]

GANTRY = Path(sys.executable).parent / "gantry"
APPLETS = ("ip", "ping", "httpd", "cat", "hostname", "ls")
UDP_ECHO = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('0.0.0.0', 9999))\n"
    "while True:\n"
    "    data, peer = s.recvfrom(100)\n"
    "    s.sendto(b'echo ' + data, peer)\n"
)


def gantry(agent: ags.Agent, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GANTRY_URL": f"unix://{agent.socket}"}
    return subprocess.run(
        [str(GANTRY), *args], env=env, capture_output=True, text=True, check=False, timeout=120
    )


def ok(agent: ags.Agent, *args: str) -> str:
    done = gantry(agent, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def with_applets(rootfs: Path) -> Path:
    for applet in APPLETS:
        link = rootfs / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    return rootfs


def run_in(agent: ags.Agent, name: str, *argv: str) -> dict[str, Any]:
    result: dict[str, Any] = agent.req(
        "POST", f"/v1/containers/{name}/exec", body={"command": list(argv)}
    )
    return result


def settings(agent: ags.Agent, name: str) -> dict[str, Any]:
    found: dict[str, Any] = agent.req("GET", f"/v1/containers/{name}")["network_settings"]
    return found


def ip_of(agent: ags.Agent, name: str, network: str = "gantry") -> str:
    return str(settings(agent, name)["networks"][network]["ip"])


def pid_of(agent: ags.Agent, name: str) -> int:
    return int(agent.req("GET", f"/v1/containers/{name}")["state"]["pid"])


def netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def pings(agent: ags.Agent, name: str, target: str) -> bool:
    return run_in(agent, name, "ping", "-c", "1", "-W", "2", target)["rc"] == 0


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


def udp_echo(port: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        for _attempt in range(40):  # the server may still be starting
            sock.sendto(b"ping", ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError):
                return sock.recv(100)
    return b""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def host_veths(agent: ags.Agent) -> set[str]:
    """Host ends of the veths of the agent's default bridge."""
    brif = Path("/sys/class/net", agent.network.default_bridge, "brif")
    return {p.name for p in brif.iterdir()} if brif.is_dir() else set()


def reservations(agent: ags.Agent) -> dict[str, str]:
    """host-local's reservations in the agent's IPAM dir: address -> container id."""
    out = {}
    ipam = agent.root / "network" / "ipam"
    for path in ipam.rglob("*") if ipam.is_dir() else ():
        if path.is_file() and path.name[0].isdigit() and not path.name.startswith("last"):
            out[path.name] = path.read_text().splitlines()[0].strip()
    return out


def iptables_lines(*needles: str) -> list[str]:
    text = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout
    return [line for line in text.splitlines() if any(n in line for n in needles)]


def nft_rules(agent: ags.Agent) -> list[str]:
    done = subprocess.run(
        ["nft", "list", "table", "inet", agent.network.nft_table],
        capture_output=True,
        text=True,
        check=False,
    )
    return [line.strip() for line in done.stdout.splitlines() if "comment" in line]


def spec(rootfs: Path, *command: str, **fields: Any) -> dict[str, Any]:
    return {"rootfs": str(rootfs), "command": list(command or ("sleep", "600")), **fields}


# --- tests -------------------------------------------------------------------------------------


def test_peers_reach_by_ip_and_name_another_network_cannot(no_leftovers: None) -> None:
    with ags.running_agent() as (agent, rootfs):
        with_applets(rootfs)
        for name in ("alpha", "beta"):
            ok(agent, "run", "-d", "--name", name, "--rootfs", str(rootfs), "sleep", "600")
        ok(agent, "network", "create", "--label", "tier=back", "other")
        ok(agent, "run", "-d", "--name", "gamma", "--network", "other", "--network-alias",
           "g", "--rootfs", str(rootfs), "sleep", "600")  # fmt: skip
        alpha = ip_of(agent, "alpha")
        assert ip_of(agent, "gamma", "other") != alpha
        subnet = agent.network.default_subnet.rsplit(".", 1)[0]
        assert alpha.startswith(subnet + ".")
        assert pings(agent, "beta", alpha)
        assert pings(agent, "beta", "alpha")
        hosts = run_in(agent, "beta", "cat", "/etc/hosts")["stdout"]
        assert f"{alpha}\talpha" in hosts and "gamma" not in hosts
        assert run_in(agent, "beta", "hostname")["stdout"] == "beta\n"
        assert "nameserver" in run_in(agent, "beta", "cat", "/etc/resolv.conf")["stdout"]
        # another user network: no way to the default one, by address or by name
        assert not pings(agent, "gamma", alpha)
        assert not pings(agent, "gamma", "alpha")
        assert run_in(agent, "gamma", "cat", "/etc/hosts")["stdout"].count("alpha") == 0

        listed = json.loads(ok(agent, "network", "ls", "--json"))
        by_name = {net["name"]: net for net in listed}
        assert by_name["gantry"]["containers"] == ["alpha", "beta"]
        assert by_name["gantry"]["bridge"] == agent.network.default_bridge
        assert by_name["other"]["containers"] == ["gamma"]
        assert by_name["other"]["labels"] == {"tier": "back"}
        inspected = json.loads(ok(agent, "network", "inspect", "other"))[0]
        assert inspected["subnet"] == by_name["other"]["subnet"]
        # a network in use, and the default one, cannot be removed
        refused = gantry(agent, "network", "rm", "other")
        assert refused.returncode != 0 and "gamma" in refused.stderr
        assert agent.error("DELETE", "/v1/networks/gantry").status == 409
        assert agent.error("DELETE", "/v1/networks/nope").status == 404
        assert agent.error("POST", "/v1/networks", body={"name": "other"}).status == 409
        bad = agent.error("POST", "/v1/networks", body={"name": "x", "subnet": "10.1.2.3/24"})
        assert (bad.status, bad.field) == (422, "subnet")
        # PUT converges a network: create, no change, dry run, recreate, refused while in use
        put = agent.req("PUT", "/v1/networks/extra", body={"spec": {"labels": {"a": "1"}}})
        assert put["changed"] and put["actions"] == ["create"] and put["network"]["subnet"]
        again = agent.req("PUT", "/v1/networks/extra", body={"spec": {"labels": {"a": "1"}}})
        assert (again["changed"], again["actions"]) == (False, [])
        subnet = put["network"]["subnet"]
        same = agent.req("PUT", "/v1/networks/extra", body={"spec": {"subnet": subnet}})
        assert not same["changed"]
        dry = agent.req(
            "PUT", "/v1/networks/extra", body={"spec": {"internal": True}, "dry_run": True}
        )
        assert dry["actions"] == ["recreate"] and dry["diff"]["after"]["internal"] is True
        assert agent.req("GET", "/v1/networks/extra")["internal"] is False
        done = agent.req("PUT", "/v1/networks/extra", body={"spec": {"internal": True}})
        assert done["network"]["internal"] is True
        assert done["network"]["id"] != put["network"]["id"]
        busy = agent.error("PUT", "/v1/networks/other", body={"spec": {"internal": True}})
        assert busy.status == 409 and "gamma" in busy.detail
        assert agent.req("DELETE", "/v1/networks/extra") == {"changed": True}
        # a peer that leaves disappears from the others' hosts files (rewritten in place)
        ok(agent, "rm", "-f", "alpha")
        assert "alpha" not in run_in(agent, "beta", "cat", "/etc/hosts")["stdout"]
        ok(agent, "rm", "-f", "gamma")
        assert ok(agent, "network", "rm", "other") == "other\n"
        assert agent.error("GET", "/v1/networks/other").status == 404


def test_none_host_and_container_modes(no_leftovers: None) -> None:
    with ags.running_agent() as (agent, rootfs):
        with_applets(rootfs)
        ok(agent, "run", "-d", "--name", "lonely", "--network", "none", "--rootfs", str(rootfs),
           "sleep", "600")  # fmt: skip
        links = run_in(agent, "lonely", "ip", "-o", "link")["stdout"].splitlines()
        assert [line.split(":")[1].strip() for line in links] == ["lo"]
        assert " UP" in links[0] or "LOWER_UP" in links[0]
        assert settings(agent, "lonely") == {"networks": {}, "ports": []}

        ok(agent, "run", "-d", "--name", "hosty", "--network", "host", "--rootfs", str(rootfs),
           "sleep", "600")  # fmt: skip
        assert netns_inode(pid_of(agent, "hosty")) == netns_inode(os.getpid())
        names = run_in(agent, "hosty", "ls", "/sys/class/net")["stdout"].split()
        assert "lo" in names and set(names) & {p.name for p in Path("/sys/class/net").iterdir()}
        assert len(names) > 1

        ok(agent, "run", "-d", "--name", "web", "--rootfs", str(rootfs), "sleep", "600")
        ok(agent, "run", "-d", "--name", "side", "--network", "container:web",
           "--rootfs", str(rootfs), "sleep", "600")  # fmt: skip
        assert netns_inode(pid_of(agent, "side")) == netns_inode(pid_of(agent, "web"))
        assert ip_of(agent, "web") in run_in(agent, "side", "ip", "-o", "-4", "addr")["stdout"]
        assert netns_inode(pid_of(agent, "web")) != netns_inode(os.getpid())

        # joining a container that does not run is a conflict; one that does not exist, invalid
        ok(agent, "create", "--name", "idle", "--rootfs", str(rootfs), "sleep", "600")
        refused = agent.error(
            "PUT",
            "/v1/containers/late",
            body={"state": "running", "spec": spec(rootfs, network={"mode": "container:idle"})},
        )
        assert refused.status == 409, refused.detail
        assert agent.error("GET", "/v1/containers/late").status == 404
        missing = agent.error(
            "PUT",
            "/v1/containers/late",
            body={"spec": spec(rootfs, network={"mode": "container:x"})},
        )
        assert (missing.status, missing.field) == (422, "spec.network.mode")


def test_published_ports_tcp_random_and_udp(no_leftovers: None) -> None:
    with ags.running_agent() as (agent, rootfs):
        with_applets(rootfs)
        www = rootfs / "www"
        www.mkdir()
        (www / "index.html").write_text("hello from gantry\n")
        fixed = free_port()
        ok(agent, "run", "-d", "--name", "web", "-p", f"127.0.0.1:{fixed}:80",
           "-p", "127.0.0.1::80", "--rootfs", str(rootfs),
           "httpd", "-f", "-p", "80", "-h", "/www")  # fmt: skip
        ports = settings(agent, "web")["ports"]
        assert [(p["host_ip"], p["container_port"], p["protocol"]) for p in ports] == [
            ("127.0.0.1", 80, "tcp")
        ] * 2
        assert fixed in [p["host_port"] for p in ports]
        random_port = next(p["host_port"] for p in ports if p["host_port"] != fixed)
        assert random_port > 0
        assert agent.req("GET", "/v1/containers/web")["spec"]["ports"][0]["host_port"] in (
            None,
            fixed,
        )
        ags.wait_for(lambda: _answers(f"http://127.0.0.1:{fixed}/"), what="httpd")
        assert http_get(f"http://127.0.0.1:{fixed}/") == "hello from gantry\n"
        assert http_get(f"http://127.0.0.1:{random_port}/") == "hello from gantry\n"
        shown = ok(agent, "port", "web").splitlines()
        assert f"80/tcp -> 127.0.0.1:{fixed}" in shown
        assert f"80/tcp -> 127.0.0.1:{random_port}" in shown
        # the same host port again is refused, naming the field
        taken = agent.error(
            "PUT",
            "/v1/containers/copy",
            body={"spec": spec(rootfs, ports=[f"127.0.0.1:{fixed}:80"])},
        )
        assert taken.status == 422 and taken.field == "spec.ports[0]", taken.detail

        # UDP: the host's Python (its /usr bound read-only) echoes inside the container
        for link, target in (("lib", "usr/lib"), ("lib64", "usr/lib64")):
            if not (rootfs / link).exists():
                (rootfs / link).symlink_to(target)
        udp = free_port(socket.SOCK_DGRAM)
        ok(agent, "run", "-d", "--name", "echo", "-p", f"127.0.0.1:{udp}:9999/udp",
           "-v", "/usr:/usr:ro", "--rootfs", str(rootfs),
           "/usr/bin/python3", "-c", UDP_ECHO)  # fmt: skip
        assert udp_echo(udp) == b"echo ping"


def _answers(url: str) -> bool:
    try:
        http_get(url)
    except OSError:
        return False
    return True


def test_hundred_start_stop_cycles_leave_nothing(no_leftovers: None) -> None:
    with ags.running_agent() as (agent, rootfs):
        with_applets(rootfs)
        ok(agent, "run", "-d", "--name", "anchor", "--rootfs", str(rootfs), "sleep", "100000")
        anchor_veths = host_veths(agent)
        anchor_ips = reservations(agent)
        rules_before = nft_rules(agent)
        assert len(anchor_veths) == 1 and len(anchor_ips) == 1
        ok(agent, "create", "--name", "cycle", "-p", "127.0.0.1::80", "-p", "53/udp",
           "--stop-signal", "SIGKILL", "--rootfs", str(rootfs), "sleep", "600")  # fmt: skip
        cycle_id = agent.req("GET", "/v1/containers/cycle")["id"]
        seen_ips = set()
        for _round in range(100):
            agent.req("POST", "/v1/containers/cycle/start")
            seen_ips.add(ip_of(agent, "cycle"))
            agent.req("POST", "/v1/containers/cycle/stop", body={"timeout": 5})
        assert seen_ips
        assert host_veths(agent) == anchor_veths
        assert reservations(agent) == anchor_ips
        assert iptables_lines(cycle_id) == []
        assert nft_rules(agent) == rules_before
        assert not (agent.root / "network" / "netns" / cycle_id).exists()
        assert settings(agent, "cycle") == {"networks": {}, "ports": []}
        # a restart-policy restart takes the network down and up again: one address
        ok(agent, "run", "-d", "--name", "phoenix", "--restart", "always",
           "--rootfs", str(rootfs), "sleep", "600")  # fmt: skip
        first_pid = pid_of(agent, "phoenix")
        os.kill(first_pid, 9)
        ags.wait_for(
            lambda: (
                agent.req("GET", "/v1/containers/phoenix")["state"]["pid"] not in (None, first_pid)
            ),
            what="the restart",
        )
        phoenix_id = agent.req("GET", "/v1/containers/phoenix")["id"]
        assert list(reservations(agent).values()).count(phoenix_id) == 1
        assert pings(agent, "phoenix", "anchor")


def test_kill_9_of_the_agent_then_restart_cleans_what_it_left(no_leftovers: None) -> None:
    with ags.running_agent() as (agent, rootfs):
        with_applets(rootfs)
        www = rootfs / "www"
        www.mkdir()
        (www / "index.html").write_text("still here\n")
        port = free_port()
        ok(agent, "run", "-d", "--name", "keep", "-p", f"127.0.0.1:{port}:80",
           "--rootfs", str(rootfs), "httpd", "-f", "-p", "80", "-h", "/www")  # fmt: skip
        for name in ("gone", "dies"):
            ok(agent, "run", "-d", "--name", name, "-p", "127.0.0.1::80", "--rootfs",
               str(rootfs), "sleep", "600")  # fmt: skip
        ids = {n: agent.req("GET", f"/v1/containers/{n}")["id"] for n in ("keep", "gone", "dies")}
        pids = {n: pid_of(agent, n) for n in ids}
        veths = {}
        for cached in NetworkManager(agent.network).cni.cached_attachments():
            for iface in cached.result.get("interfaces") or []:
                if not iface.get("sandbox") and str(iface.get("name", "")).startswith("veth"):
                    veths[cached.container_id] = str(iface["name"])
        assert set(veths) == set(ids.values())
        keep_ip = ip_of(agent, "keep")
        ags.wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), what="httpd")

        agent.kill9()
        # While the agent is down: "dies" exits; "gone" is removed by a crash half-way
        # (its row is gone, the network it had is not).
        os.kill(pids["dies"], 9)
        os.kill(pids["gone"], 9)
        db = sqlite3.connect(agent.root / "state.db")
        try:
            with db:
                db.execute("DELETE FROM containers WHERE name = 'gone'")
        finally:
            db.close()
        assert http_get(f"http://127.0.0.1:{port}/") == "still here\n"  # no agent needed
        agent.start()

        assert set(reservations(agent).values()) == {ids["keep"]}
        assert host_veths(agent) == {veths[ids["keep"]]}
        for name in ("gone", "dies"):
            assert not Path("/sys/class/net", veths[ids[name]]).exists()
            assert iptables_lines(ids[name]) == []
        assert pid_of(agent, "keep") == pids["keep"]
        assert ip_of(agent, "keep") == keep_ip
        assert http_get(f"http://127.0.0.1:{port}/") == "still here\n"
        assert agent.req("GET", "/v1/containers/dies")["state"]["status"] == "stopped"
        # the survivor's hosts file no longer names the dead
        hosts = run_in(agent, "keep", "cat", "/etc/hosts")["stdout"]
        assert "gone" not in hosts and "dies" not in hosts
        # and the restarted one gets a network again
        agent.req("POST", "/v1/containers/dies/start")
        assert pings(agent, "dies", "keep")
