#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: network
short_description: Converge a container network on a Gantry agent
version_added: 0.2.0
description:
  - Makes the Gantry agent on a host hold the network O(name) with the settings the task
    gives (C(PUT /v1/networks/NAME)), or not hold it.
  - The agent compares and plans; the module asks it first with C(dry_run), so check mode
    and the real run answer from the same code.
  - A setting left out of the task means "the agent's choice, or what the network has now",
    so an existing network is not changed because the task does not repeat its subnet.
  - A network whose settings differ from the task's can only be recreated (removed and made
    anew), which the agent refuses while containers use it. The module does that only with
    O(force); without it, the task fails naming the fields that differ and changes nothing.
author:
  - Gantry developers (!UNKNOWN)
options:
  name:
    description:
      - The network's name, which containers give in their C(networks) option.
    type: str
    required: true
  state:
    description:
      - V(present) - the network exists with these settings.
      - V(absent) - it does not. The agent refuses while containers use it (naming them), and
        never removes its default network C(gantry).
    type: str
    choices: [present, absent]
    default: present
  driver:
    description:
      - V(bridge) - a Linux bridge on the host, with NAT to the outside unless O(internal).
      - V(macvlan), V(ipvlan) - sub-interfaces of the host interface O(parent), on the same
        layer 2 network (macvlan) or sharing its MAC address (ipvlan).
      - Left out, V(bridge) for a new network.
    type: str
    choices: [bridge, macvlan, ipvlan]
  subnet:
    description:
      - The network's IPv4 subnet in CIDR notation (V(10.89.0.0/24)). Left out, the agent picks
        a free private /24 for a new network.
    type: str
  gateway:
    description:
      - The gateway address inside O(subnet). Left out, the subnet's first address.
    type: str
  ip_range:
    description:
      - A CIDR range inside O(subnet) from which containers get their addresses. Left out, the
        whole subnet.
    type: str
  internal:
    description:
      - No route to the outside (no NAT); containers reach each other and the host only.
    type: bool
  parent:
    description:
      - With O(driver=macvlan) or O(driver=ipvlan), the host interface (V(eth0)).
    type: str
  labels:
    description:
      - Labels (string keys and values).
    type: dict
  force:
    description:
      - Recreate the network when its settings differ from the task's. Without it, such a
        task fails naming the differing fields and changes nothing.
      - The agent still refuses while containers use the network.
    type: bool
    default: false
extends_documentation_fragment:
  - gantry.fleet.agent_options
  - gantry.fleet.attributes
  - gantry.fleet.attributes.actiongroup_gantry
attributes:
  check_mode:
    support: full
    details:
      - The agent answers the same request with C(dry_run). A removal is predicted from the
        network's inspect (its containers).
      - The agent checks a new network's settings (a subnet that overlaps a route, a gateway
        outside the subnet, a missing parent) when it makes it, so check mode predicts the
        create of a network the real run then fails to make, with the agent's message.
  diff_mode:
    support: full
    details:
      - The network's settings before and after; RV(diff.fields) names each that differs.
  idempotent:
    support: full
seealso:
  - module: gantry.fleet.container
"""

EXAMPLES = r"""
- name: A network for the web tier
  gantry.fleet.network:
    name: web
    subnet: 10.89.0.0/24
    labels:
      tier: web

- name: An internal network, the agent picks the subnet
  gantry.fleet.network:
    name: backend
    internal: true

- name: A container on both
  gantry.fleet.container:
    name: app
    image: localhost:5000/app:2
    networks:
      - name: web
        aliases: [app]
      - name: backend
        ipv4_address: "{{ backend_ip }}"

- name: Move it to another subnet (recreates it; nothing may use it)
  gantry.fleet.network:
    name: web
    subnet: 10.90.0.0/24
    force: true

- name: Gone
  gantry.fleet.network:
    name: backend
    state: absent
"""

RETURN = r"""
actions:
  description:
    - What the agent did (or would do), from C(create), C(recreate) and C(remove); empty when
      nothing changed.
  returned: always
  type: list
  elements: str
  sample: [create]
network:
  description:
    - The network as the agent reports it afterwards; in check mode as it is now (or, for a
      new one, as the agent plans it). Empty when it does not exist.
  returned: always
  type: dict
  sample:
    name: web
    id: 8c1f0e2a9b7d
    driver: bridge
    subnet: 10.89.0.0/24
    gateway: 10.89.0.1
    ip_range: null
    internal: false
    parent: null
    bridge: gantry1
    labels: {tier: web}
    created: "2026-11-23T16:00:00Z"
    containers: []
diff:
  description: The settings before and after, as C(--diff) shows it.
  returned: always
  type: dict
  contains:
    before:
      description: The settings before (C(state) is C(absent) when there was no network).
      type: dict
      returned: always
    after:
      description: The settings after.
      type: dict
      returned: always
    fields:
      description: Each setting that differs (or C(state) when the network comes or goes).
      type: list
      elements: str
      returned: always
      sample: [subnet, gateway]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gantry.fleet.plugins.module_utils._agent_client import (
    AGENT_REQUIRED_BY,
    AgentError,
    AgentNotFound,
    agent_argument_spec,
    client_from_module,
    fail_with,
    quote_path,
)

SPEC_OPTIONS = ("driver", "subnet", "gateway", "ip_range", "internal", "parent", "labels")
# What the diff shows of a network: its settings, not its bookkeeping.
SETTINGS = SPEC_OPTIONS
DEFAULT_NETWORK = "gantry"


def build_spec(params):
    """The agent's network spec: only what the task sets (absent means keep / agent's choice)."""
    spec = {}
    for option in SPEC_OPTIONS:
        if params.get(option) is not None:
            spec[option] = params[option]
    if "labels" in spec:
        labels = {}
        for key, value in spec["labels"].items():
            if not isinstance(value, str):
                raise ValueError(
                    "labels.%s: must be a string, got %s %r; quote the value in YAML"
                    % (key, type(value).__name__, value)
                )
            labels[str(key)] = value
        spec["labels"] = labels
    return spec


def settings(network):
    if not network:
        return {"state": "absent"}
    shown = {"state": "present"}
    for key in SETTINGS:
        shown[key] = network.get(key)
    return shown


def differing(before, after):
    return [key for key in ["state", *SETTINGS] if before.get(key) != after.get(key)]


def diff_of(name, before, after, fields=None):
    fields = differing(before, after) if fields is None else list(fields)
    return {
        "before": before,
        "after": after,
        "before_header": "network %s" % name,
        "after_header": "network %s (differs: %s)" % (name, ", ".join(fields) or "nothing"),
        "fields": fields,
    }


def agent_diff(name, answer):
    """The module's diff from the agent's PUT answer (its own fields when it names them)."""
    diff = answer.get("diff") or {}
    before = diff.get("before")
    after = diff.get("after")
    before = settings(before) if before else {"state": "absent"}
    after = settings(after) if after else {"state": "absent"}
    fields = diff.get("fields")
    if fields is None:
        fields = differing(before, after)
    return diff_of(name, before, after, fields)


class NetworkModule:
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.name = self.params["name"]
        self.path = "/v1/networks/%s" % quote_path(self.name)
        self.client = client_from_module(module)
        self.check_mode = module.check_mode

    def present(self):
        try:
            spec = build_spec(self.params)
        except ValueError as error:
            self.module.fail_json(msg=str(error), field="labels")
        plan = self.client.put(self.path, body={"spec": spec, "dry_run": True}).body or {}
        actions = list(plan.get("actions") or [])
        diff = agent_diff(self.name, plan)
        if "recreate" in actions and not self.params["force"]:
            self.module.fail_json(
                msg="network %s differs in %s and can only be recreated; set force=true to "
                "recreate it (nothing was changed)"
                % (self.name, ", ".join(f for f in diff["fields"] if f != "state") or "?"),
                actions=[],
                diff=diff,
                network=plan.get("network") or {},
            )
        if self.check_mode or not actions:
            return dict(
                changed=bool(actions),
                actions=actions,
                network=plan.get("network") or self.client.get_or_none(self.path) or {},
                diff=diff,
            )
        answer = self.client.put(self.path, body={"spec": spec, "dry_run": False}).body or {}
        actions = list(answer.get("actions") or [])
        return dict(
            changed=bool(answer.get("changed", bool(actions))),
            actions=actions,
            network=answer.get("network") or {},
            diff=agent_diff(self.name, answer),
        )

    def absent(self):
        current = self.client.get_or_none(self.path)
        diff = diff_of(self.name, settings(current), {"state": "absent"})
        if current is None:
            return dict(changed=False, actions=[], network={}, diff=diff)
        if self.check_mode:
            # The agent has no dry run for a removal; what it would refuse, check mode refuses.
            users = current.get("containers") or []
            if users:
                self.module.fail_json(
                    msg="network %s is in use by containers: %s" % (self.name, ", ".join(users)),
                    status=409,
                    field="name",
                )
            if self.name == DEFAULT_NETWORK:
                self.module.fail_json(
                    msg="network %s is the agent's default network and cannot be removed"
                    % self.name,
                    status=409,
                    field="name",
                )
            return dict(changed=True, actions=["remove"], network=current, diff=diff)
        try:
            self.client.delete(self.path)
        except AgentNotFound:
            # Removed by someone else in between: what was asked holds.
            return dict(changed=False, actions=[], network={}, diff=diff_of(self.name, {}, {}))
        return dict(changed=True, actions=["remove"], network={}, diff=diff)

    def run(self):
        try:
            if self.params["state"] == "absent":
                return self.absent()
            return self.present()
        except AgentError as error:
            fail_with(self.module, error)
        return None  # not reached


def module_spec():
    """The AnsibleModule arguments (kept apart from the run, as the other modules do)."""
    return dict(
        argument_spec=agent_argument_spec(
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            driver=dict(type="str", choices=["bridge", "macvlan", "ipvlan"]),
            subnet=dict(type="str"),
            gateway=dict(type="str"),
            ip_range=dict(type="str"),
            internal=dict(type="bool"),
            parent=dict(type="str"),
            labels=dict(type="dict"),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
        required_by=AGENT_REQUIRED_BY,
    )


def run_module(module):
    result = NetworkModule(module).run()
    module.exit_json(**result)


def main():
    run_module(AnsibleModule(**module_spec()))


if __name__ == "__main__":
    main()
