# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""gantry.fleet.container's options to the agent's spec, and the agent's fields to options."""

from __future__ import annotations

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.gantry.fleet.plugins.module_utils._container_spec import (
    OPTION_FIELDS,
    SPEC_OPTION_NAMES,
    SpecError,
    ansible_diff,
    build_spec,
    option_for_field,
)
from ansible_collections.gantry.fleet.plugins.modules import container


def params(**given):
    """The module's validated parameters for these options, as AnsibleModule would give them."""
    given.setdefault("name", "web")
    result = ArgumentSpecValidator(container.argument_spec()).validate(given)
    assert not result.error_messages, result.error_messages
    return result.validated_parameters


def test_only_the_options_given_are_sent():
    assert build_spec(params(rootfs="/srv/r")) == {"rootfs": "/srv/r"}


def test_every_spec_option_is_a_module_option():
    spec = container.argument_spec()
    for option in SPEC_OPTION_NAMES:
        assert option in spec, option


def test_every_field_maps_back_to_its_option():
    for option, field in OPTION_FIELDS:
        assert option_for_field("spec." + field) == option


@pytest.mark.parametrize(
    "field, option",
    [
        ("spec.resources.memory", "memory"),
        ("spec.mounts.2.source", "mounts"),
        ("spec.mounts[2].source", "mounts"),
        ("spec.capabilities.add[0]", "capabilities"),
        ("spec.healthcheck.test", "healthcheck"),
        ("spec.network.mode", "network_mode"),
        ("spec.capabilities.add.0", "capabilities"),
        ("spec.capabilities.drop", "cap_drop"),
        ("spec.capabilities", "capabilities"),
        ("spec.env.PATH", "env"),
        ("spec.ports", "published_ports"),
        ("state", "state"),
        ("name", "name"),
        ("query.force", None),
        (None, None),
        ("spec.nonsense", None),
    ],
)
def test_agent_fields_name_options(field, option):
    assert option_for_field(field) == option


def test_full_spec():
    spec = build_spec(
        params(
            rootfs="/srv/r",
            entrypoint=["/bin/sh", "-c"],
            command="echo 'a b' c",
            env={"A": "1"},
            user="1000:1000",
            working_dir="/tmp",
            hostname="h",
            mounts=[{"type": "tmpfs", "target": "/run", "options": ["size=1m"]}],
            volumes=["/srv/www:/www:ro,nosuid", "/srv/data:/data"],
            memory="64m",
            memory_swap=-1,
            cpus=0.5,
            cpu_shares=512,
            cpuset_cpus="0",
            pids_limit=32,
            cap_add=["net_admin"],
            read_only=True,
            privileged=False,
            labels={"app": "web"},
            restart_policy="on-failure",
            restart_retries=3,
            healthcheck={"test": "cat /ok", "interval": 5},
            stop_signal="SIGINT",
            stop_timeout=2,
            init=False,
            tty=False,
            network_mode="none",
            ports=["8080:80"],
            sysctls={"net.ipv4.ip_forward": "1"},
        )
    )
    assert spec == {
        "rootfs": "/srv/r",
        "entrypoint": ["/bin/sh", "-c"],
        "command": ["echo", "a b", "c"],
        "env": {"A": "1"},
        "user": "1000:1000",
        "workdir": "/tmp",
        "hostname": "h",
        "mounts": [
            {"type": "tmpfs", "target": "/run", "options": ["size=1m"]},
            {
                "type": "bind",
                "source": "/srv/www",
                "target": "/www",
                "read_only": True,
                "options": ["nosuid"],
            },
            {"type": "bind", "source": "/srv/data", "target": "/data"},
        ],
        "resources": {
            "memory": "64m",
            "memory_swap": -1,
            "cpus": 0.5,
            "cpu_shares": 512,
            "cpuset_cpus": "0",
            "pids_limit": 32,
        },
        "capabilities": {"add": ["net_admin"], "drop": []},
        "read_only": True,
        "privileged": False,
        "labels": {"app": "web"},
        "restart_policy": "on-failure:3",
        "healthcheck": {"test": ["CMD-SHELL", "cat /ok"], "interval": 5.0},
        "stop_signal": "SIGINT",
        "stop_timeout": 2.0,
        "init": False,
        "tty": False,
        "network": {"mode": "none"},
        "ports": ["8080:80"],
        "sysctls": {"net.ipv4.ip_forward": "1"},
    }


def test_empty_lists_are_sent_so_removing_them_is_a_change():
    spec = build_spec(params(rootfs="/r", mounts=[], labels={}, env={}))
    assert spec == {"rootfs": "/r", "mounts": [], "labels": {}, "env": {}}


def test_healthcheck_argv_list():
    spec = build_spec(params(rootfs="/r", healthcheck={"test": ["CMD", "true"]}))
    assert spec["healthcheck"] == {"test": ["CMD", "true"]}


@pytest.mark.parametrize(
    "given, message",
    [
        ({"env": {"DEBUG": True}}, "env.DEBUG: must be a string, got bool True"),
        ({"labels": {"n": 3}}, "labels.n: must be a string, got int 3"),
        ({"sysctls": {"net.x": 1}}, "sysctls.net.x: must be a string"),
        ({"command": ["echo", 1]}, "command[1]: must be a string, got int 1"),
        ({"command": "echo 'open"}, "command: cannot split"),
        ({"entrypoint": {"a": 1}}, "entrypoint: must be a list of strings or a string"),
        ({"volumes": ["/only"]}, "volumes: '/only' is not SOURCE:TARGET"),
        ({"volumes": [":/x"]}, "is not SOURCE:TARGET"),
        (
            {"restart_policy": "always", "restart_retries": 2},
            "restart_retries: only meaningful with restart_policy=on-failure",
        ),
    ],
)
def test_what_yaml_garbles_is_refused_naming_the_option(given, message):
    with pytest.raises(SpecError) as info:
        build_spec(params(rootfs="/r", **given))
    assert message in str(info.value)


def test_diff_names_the_fields():
    diff = ansible_diff(
        "web",
        {
            "before": {"state": "running", "spec": {"resources": {"memory": 1}}},
            "after": {"state": "running", "spec": {"resources": {"memory": 2}}},
            "fields": ["spec.resources.memory"],
        },
    )
    assert diff["fields"] == ["spec.resources.memory"]
    assert diff["after_header"] == "container web (differs: spec.resources.memory)"
    assert diff["before"]["spec"] == {"resources": {"memory": 1}}


def test_diff_absent_side():
    diff = ansible_diff("web", {"before": None, "after": {"state": "running"}, "fields": ["state"]})
    assert diff["before"] == {"state": "absent"}
    diff = ansible_diff("web", {"before": {"state": "stopped"}, "after": None, "fields": ["state"]})
    assert diff["after"] == {"state": "absent"}
    assert ansible_diff("web", None)["fields"] == []


# --- networks, dns, block I/O, pull (CONTRACTS: community.docker's names and shapes) ---------


def test_networks_become_the_agents_network_object():
    spec = build_spec(
        params(
            rootfs="/r",
            network_mode="bridge",
            networks=[
                {"name": "front", "aliases": ["web", "www"], "ipv4_address": "10.89.0.5"},
                {"name": "back"},
            ],
        )
    )
    assert spec["network"] == {
        "mode": "bridge",
        "networks": {
            "front": {"aliases": ["web", "www"], "ipv4_address": "10.89.0.5"},
            "back": {},
        },
    }


def test_networks_alone_leave_the_mode_to_the_agent():
    spec = build_spec(params(rootfs="/r", networks=[{"name": "front"}]))
    assert spec["network"] == {"networks": {"front": {}}}


def test_an_empty_network_list_is_sent():
    assert build_spec(params(rootfs="/r", networks=[]))["network"] == {"networks": {}}


@pytest.mark.parametrize("mode", ["bridge", "none", "host", "container:db"])
def test_network_mode_alone(mode):
    assert build_spec(params(rootfs="/r", network_mode=mode))["network"] == {"mode": mode}


def test_a_network_listed_twice_is_refused():
    with pytest.raises(SpecError) as info:
        build_spec(params(rootfs="/r", networks=[{"name": "a"}, {"name": "a"}]))
    assert str(info.value) == "networks[1].name: network 'a' is listed twice"


def test_a_network_without_a_name_is_refused_by_the_argument_spec():
    result = ArgumentSpecValidator(container.argument_spec()).validate(
        {"name": "web", "rootfs": "/r", "networks": [{"aliases": ["x"]}]}
    )
    assert any("name" in message for message in result.error_messages)


def test_dns_options_map_onto_the_dns_object():
    spec = build_spec(
        params(
            rootfs="/r",
            dns_servers=["10.0.0.2", "10.0.0.3"],
            dns_search_domains=["example.com"],
            dns_options=["ndots:2"],
        )
    )
    assert spec["dns"] == {
        "servers": ["10.0.0.2", "10.0.0.3"],
        "search": ["example.com"],
        "options": ["ndots:2"],
    }


def test_dns_only_what_is_set():
    assert build_spec(params(rootfs="/r", dns_opts=["rotate"]))["dns"] == {"options": ["rotate"]}
    assert "dns" not in build_spec(params(rootfs="/r"))


def test_block_io_options_map_onto_resources():
    spec = build_spec(
        params(
            rootfs="/r",
            blkio_weight=300,
            device_read_bps=[{"path": "/dev/sda", "rate": "10m"}],
            device_write_bps=[{"path": "/dev/sda", "rate": 1048576}],
            device_read_iops=[{"path": "/dev/sdb", "rate": "100"}],
            device_write_iops=[{"path": "/dev/sdb", "rate": 50}],
        )
    )
    assert spec["resources"] == {
        "blkio_weight": 300,
        "device_read_bps": [{"path": "/dev/sda", "rate": "10m"}],
        "device_write_bps": [{"path": "/dev/sda", "rate": 1048576}],
        # iops rates are ints (community.docker's type), so "100" arrives converted.
        "device_read_iops": [{"path": "/dev/sdb", "rate": 100}],
        "device_write_iops": [{"path": "/dev/sdb", "rate": 50}],
    }


def test_an_empty_device_list_is_sent_so_removing_limits_is_a_change():
    spec = build_spec(params(rootfs="/r", device_read_bps=[]))
    assert spec["resources"] == {"device_read_bps": []}


@pytest.mark.parametrize("rate", [True, 1.5, ["1m"]])
def test_a_bps_rate_that_is_neither_number_nor_size_is_refused(rate):
    with pytest.raises(SpecError) as info:
        build_spec(params(rootfs="/r", device_write_bps=[{"path": "/dev/sda", "rate": rate}]))
    assert str(info.value).startswith(
        "device_write_bps[0].rate: must be a number or a size such as 10m, got"
    )


def test_iops_rate_must_be_an_integer():
    result = ArgumentSpecValidator(container.argument_spec()).validate(
        {"name": "web", "rootfs": "/r", "device_read_iops": [{"path": "/dev/sda", "rate": "many"}]}
    )
    assert any("rate" in message for message in result.error_messages)


def test_pull_is_not_part_of_the_spec():
    spec = build_spec(params(image="busybox:1", pull="always"))
    assert spec == {"image": "busybox:1"}


def test_pull_choices():
    result = ArgumentSpecValidator(container.argument_spec()).validate(
        {"name": "web", "image": "busybox", "pull": "sometimes"}
    )
    assert any("pull" in message for message in result.error_messages)
    assert params(image="busybox")["pull"] == "missing"


@pytest.mark.parametrize(
    "field, option",
    [
        ("spec.network", "network_mode"),
        ("spec.network.networks", "networks"),
        ("spec.network.networks.front.ipv4_address", "networks"),
        ("spec.dns", "dns_servers"),
        ("spec.dns.servers[1]", "dns_servers"),
        ("spec.dns.search", "dns_search_domains"),
        ("spec.dns.options.0", "dns_opts"),
        ("spec.resources.blkio_weight", "blkio_weight"),
        ("spec.resources.device_read_bps[0].rate", "device_read_bps"),
        ("spec.resources.device_write_iops.1.path", "device_write_iops"),
        ("spec.image_id", "image"),
    ],
)
def test_new_fields_name_their_options(field, option):
    assert option_for_field(field) == option
