# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""From gantry.fleet.container's options to the agent's container spec, and back for errors.

The module stays thin: it sends the options the task set, in the agent's shape, and
nothing else. The agent fills every default and normalises both sides (``"1g"`` and
``1073741824`` are one value there), so nothing here compares or normalises values; an
option the task leaves out means "the agent's default", which also undoes an earlier
setting. Only what YAML itself would garble is checked here (an ``env`` value of ``yes``
arriving as a boolean), with a message naming the option.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import shlex

# module option -> dotted path in the agent's spec (for building and for naming errors).
OPTION_FIELDS = (
    ("image", "image"),
    ("rootfs", "rootfs"),
    ("entrypoint", "entrypoint"),
    ("command", "command"),
    ("env", "env"),
    ("user", "user"),
    ("workdir", "workdir"),
    ("hostname", "hostname"),
    ("mounts", "mounts"),
    ("memory", "resources.memory"),
    ("memory_swap", "resources.memory_swap"),
    ("cpus", "resources.cpus"),
    ("cpu_shares", "resources.cpu_shares"),
    ("cpuset_cpus", "resources.cpuset_cpus"),
    ("pids_limit", "resources.pids_limit"),
    ("blkio_weight", "resources.blkio_weight"),
    ("device_read_bps", "resources.device_read_bps"),
    ("device_write_bps", "resources.device_write_bps"),
    ("device_read_iops", "resources.device_read_iops"),
    ("device_write_iops", "resources.device_write_iops"),
    ("capabilities", "capabilities.add"),
    ("cap_drop", "capabilities.drop"),
    ("read_only", "read_only"),
    ("privileged", "privileged"),
    ("labels", "labels"),
    ("restart_policy", "restart_policy"),
    ("healthcheck", "healthcheck"),
    ("stop_signal", "stop_signal"),
    ("stop_timeout", "stop_timeout"),
    ("init", "init"),
    ("tty", "tty"),
    ("network_mode", "network.mode"),
    ("networks", "network.networks"),
    ("published_ports", "ports"),
    ("dns_servers", "dns.servers"),
    ("dns_search_domains", "dns.search"),
    ("dns_opts", "dns.options"),
    ("sysctls", "sysctls"),
)

# Options that also feed a spec field (volumes become mounts, restart_retries the policy).
EXTRA_OPTION_FIELDS = (("volumes", "mounts"), ("restart_retries", "restart_policy"))

SPEC_OPTION_NAMES = tuple(option for option, _field in OPTION_FIELDS) + tuple(
    option for option, _field in EXTRA_OPTION_FIELDS
)

# Spec sections several options feed, for errors that name the section itself.
SECTION_OPTIONS = (
    ("capabilities", "capabilities"),
    ("network", "network_mode"),
    ("dns", "dns_servers"),
    ("image_id", "image"),
)

# The resource options that are lists of {path, rate} (community.docker's names and shapes).
DEVICE_RATE_OPTIONS = (
    "device_read_bps",
    "device_write_bps",
    "device_read_iops",
    "device_write_iops",
)

# The agent's container states for the module's.
AGENT_STATES = {"present": "present", "started": "running", "stopped": "stopped"}


class SpecError(Exception):
    """An option the module can tell is wrong before asking the agent."""


def argv(option, value):
    """A command line as a list: a list stays as it is, a string is split like a shell would."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as error:
            raise SpecError(
                "%s: cannot split %r into arguments: %s" % (option, value, error)
            ) from None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise SpecError(
                    "%s[%d]: must be a string, got %s %r; quote it in YAML"
                    % (option, index, type(item).__name__, item)
                )
        return list(value)
    raise SpecError(
        "%s: must be a list of strings or a string, got %s" % (option, type(value).__name__)
    )


def string_map(option, value):
    """A dict whose values must arrive as strings (YAML turns yes into true and 010 into 8)."""
    if value is None:
        return None
    result = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise SpecError(
                "%s.%s: must be a string, got %s %r; quote the value in YAML so it is passed "
                "as written" % (option, key, type(item).__name__, item)
            )
        result[str(key)] = item
    return result


def volume_mount(text):
    """``SOURCE:TARGET[:OPTIONS]`` (Docker's -v syntax for bind mounts) as a mount object."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise SpecError(
            "volumes: %r is not SOURCE:TARGET or SOURCE:TARGET:OPTIONS (bind mounts only; "
            "use mounts for tmpfs)" % (text,)
        )
    mount = {"type": "bind", "source": parts[0], "target": parts[1]}
    options = [word for word in parts[2].split(",") if word] if len(parts) == 3 else []
    if "ro" in options:
        mount["read_only"] = True
    options = [word for word in options if word not in ("ro", "rw")]
    if options:
        mount["options"] = options
    return mount


def mount_object(mount):
    """A mount option entry in the agent's shape: unset suboptions are left to the agent."""
    result = {}
    for key in ("type", "source", "target", "read_only", "options"):
        if mount.get(key) is not None:
            result[key] = mount[key]
    return result


def restart_policy(policy, retries):
    if retries is not None:
        if policy not in (None, "on-failure"):
            raise SpecError(
                "restart_retries: only meaningful with restart_policy=on-failure, got "
                "restart_policy=%s" % policy
            )
        return "on-failure:%d" % retries
    return policy


def healthcheck(value):
    if value is None:
        return None
    result = {}
    test = value.get("test")
    if test is not None:
        if isinstance(test, str):
            # A string is a shell command line, as Docker's HEALTHCHECK CMD form with a string.
            result["test"] = ["CMD-SHELL", test]
        else:
            result["test"] = argv("healthcheck.test", test)
    for key in ("interval", "timeout", "retries", "start_period"):
        if value.get(key) is not None:
            result[key] = value[key]
    return result


def device_rates(option, value):
    """``[{path, rate}]`` in the agent's shape; a bps rate may be a size string (``10m``)."""
    if value is None:
        return None
    result = []
    for index, item in enumerate(value):
        rate = item.get("rate")
        if isinstance(rate, bool) or not isinstance(rate, (int, str)):
            raise SpecError(
                "%s[%d].rate: must be a number%s, got %s %r"
                % (
                    option,
                    index,
                    " or a size such as 10m" if option.endswith("_bps") else "",
                    type(rate).__name__,
                    rate,
                )
            )
        result.append({"path": item.get("path"), "rate": rate})
    return result


def network_settings(mode, networks):
    """The agent's ``network`` object: ``mode`` and/or ``networks`` (name -> attachment)."""
    if mode is None and networks is None:
        return None
    result = {}
    if mode is not None:
        result["mode"] = mode
    if networks is not None:
        attached = {}
        for index, network in enumerate(networks):
            name = network.get("name")
            if name in attached:
                raise SpecError("networks[%d].name: network %r is listed twice" % (index, name))
            attachment = {}
            if network.get("aliases") is not None:
                attachment["aliases"] = list(network["aliases"])
            if network.get("ipv4_address") is not None:
                attachment["ipv4_address"] = network["ipv4_address"]
            attached[name] = attachment
        result["networks"] = attached
    return result


def build_spec(params):
    """The agent's spec for the options the task set (None means not set)."""
    spec = {}

    def put(path, value):
        if value is None:
            return
        node = spec
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    put("image", params.get("image"))
    put("rootfs", params.get("rootfs"))
    put("entrypoint", argv("entrypoint", params.get("entrypoint")))
    put("command", argv("command", params.get("command")))
    put("env", string_map("env", params.get("env")))
    put("user", params.get("user"))
    put("workdir", params.get("workdir"))
    put("hostname", params.get("hostname"))

    mounts = None
    if params.get("mounts") is not None or params.get("volumes") is not None:
        mounts = [mount_object(m) for m in params.get("mounts") or []]
        mounts += [volume_mount(v) for v in params.get("volumes") or []]
    put("mounts", mounts)

    for option in (
        "memory",
        "memory_swap",
        "cpus",
        "cpu_shares",
        "cpuset_cpus",
        "pids_limit",
        "blkio_weight",
    ):
        put("resources." + option, params.get(option))
    for option in DEVICE_RATE_OPTIONS:
        put("resources." + option, device_rates(option, params.get(option)))

    if params.get("capabilities") is not None or params.get("cap_drop") is not None:
        put(
            "capabilities",
            {"add": params.get("capabilities") or [], "drop": params.get("cap_drop") or []},
        )
    put("read_only", params.get("read_only"))
    put("privileged", params.get("privileged"))
    put("labels", string_map("labels", params.get("labels")))
    put(
        "restart_policy",
        restart_policy(params.get("restart_policy"), params.get("restart_retries")),
    )
    put("healthcheck", healthcheck(params.get("healthcheck")))
    put("stop_signal", params.get("stop_signal"))
    put("stop_timeout", params.get("stop_timeout"))
    put("init", params.get("init"))
    put("tty", params.get("tty"))
    put("network", network_settings(params.get("network_mode"), params.get("networks")))
    put("ports", params.get("published_ports"))
    put("dns.servers", params.get("dns_servers"))
    put("dns.search", params.get("dns_search_domains"))
    put("dns.options", params.get("dns_opts"))
    put("sysctls", string_map("sysctls", params.get("sysctls")))
    return spec


def option_for_field(field):
    """The module option behind an agent error's dotted field (``spec.resources.memory``)."""
    if not field:
        return None
    if field == "state":
        return "state"
    if field == "name":
        return "name"
    if not field.startswith("spec."):
        return None
    # The agent writes list positions as mounts[0].source; options know only dotted paths.
    path = re.sub(r"\[(\d+)\]", r".\1", field[len("spec.") :])
    matches = [
        (len(option_path), option)
        for option, option_path in OPTION_FIELDS
        if path == option_path or path.startswith(option_path + ".")
    ]
    best = max(matches)[1] if matches else None
    if best is None:
        # A whole section the options share: name the option that sets its main part.
        for section, option in SECTION_OPTIONS:
            if path == section or path.startswith(section + "."):
                return option
    return best


def ansible_diff(name, agent_diff):
    """The agent's before/after in the shape Ansible's --diff shows, naming the fields."""
    if not agent_diff:
        return {"before": {}, "after": {}, "fields": []}
    fields = list(agent_diff.get("fields") or [])
    before = agent_diff.get("before")
    after = agent_diff.get("after")
    return {
        "before": before if before is not None else {"state": "absent"},
        "after": after if after is not None else {"state": "absent"},
        "before_header": "container %s" % name,
        "after_header": "container %s (differs: %s)" % (name, ", ".join(fields) or "nothing"),
        "fields": fields,
    }
