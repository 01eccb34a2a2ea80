#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: container_info
short_description: Inspect one container, or list containers, on a Gantry agent
version_added: 0.1.0
description:
  - With O(name), returns whether that container exists and, when it does, the agent's
    inspect document for it (its normalised configuration, run state, paths, cgroup).
  - Without O(name), lists the containers, filtered by O(status), O(labels) and
    O(name_contains), as short summaries sorted by name.
  - Only reads.
author:
  - Gantry developers (!UNKNOWN)
options:
  name:
    description:
      - The container to inspect (its name or id). Leave out to list containers.
    type: str
  status:
    description:
      - When listing, only containers in one of these run states.
    type: list
    elements: str
    choices: [created, running, paused, stopped]
  labels:
    description:
      - When listing, only containers with every one of these labels; V(key) matches any value,
        V(key=value) that value.
    type: list
    elements: str
  name_contains:
    description:
      - When listing, only containers whose name contains this text.
    type: str
extends_documentation_fragment:
  - gantry.fleet.agent_options
  - gantry.fleet.attributes
  - gantry.fleet.attributes.actiongroup_gantry
  - gantry.fleet.attributes.info_module
  - gantry.fleet.attributes.idempotent_not_modify_state
seealso:
  - module: gantry.fleet.container
"""

EXAMPLES = r"""
- name: Does web exist, and how is it configured?
  gantry.fleet.container_info:
    name: web
  register: web

- name: Show its run state
  ansible.builtin.debug:
    msg: "{{ web.container.state.status if web.exists else 'no container web' }}"

- name: Every running container the containers role manages
  gantry.fleet.container_info:
    status: [running]
    labels: [io.gantry.managed-by=gantry.fleet.containers]
  register: managed
"""

RETURN = r"""
exists:
  description: Whether the container O(name) exists.
  returned: when O(name) is given
  type: bool
  sample: true
container:
  description:
    - The agent's inspect document (C(id), C(name), C(created_at), C(spec), C(desired_state),
      C(state), C(paths), C(cgroup)); empty when the container does not exist.
  returned: when O(name) is given
  type: dict
  sample:
    id: 3f9c2d51a0b7
    name: web
    desired_state: running
    spec: {rootfs: /srv/rootfs/busybox, command: [httpd, -f]}
    state: {status: running, running: true, pid: 12345}
containers:
  description:
    - The containers that match, as summaries (C(id), C(name), C(status), C(pid),
      C(exit_code), C(created_at), C(started_at), C(labels), C(image), C(rootfs), C(command)).
  returned: when O(name) is not given
  type: list
  elements: dict
  sample:
    - {id: 3f9c2d51a0b7, name: web, status: running, pid: 12345, labels: {app: web}}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gantry.fleet.plugins.module_utils._agent_client import (
    AGENT_REQUIRED_BY,
    AgentError,
    agent_argument_spec,
    client_from_module,
    fail_with,
    quote_path,
)


def argument_spec():
    return agent_argument_spec(
        name=dict(type="str"),
        status=dict(
            type="list", elements="str", choices=["created", "running", "paused", "stopped"]
        ),
        labels=dict(type="list", elements="str"),
        name_contains=dict(type="str"),
    )


def module_spec():
    """The AnsibleModule arguments, shared with the controller-side action plugin."""
    return dict(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_by=AGENT_REQUIRED_BY,
        mutually_exclusive=[
            ("name", "status"),
            ("name", "labels"),
            ("name", "name_contains"),
        ],
    )


def run_module(module):
    client = client_from_module(module)
    params = module.params
    try:
        if params["name"] is not None:
            container = client.get_or_none("/v1/containers/%s" % quote_path(params["name"]))
            module.exit_json(changed=False, exists=container is not None, container=container or {})
        query = []
        for status in params["status"] or []:
            query.append(("status", status))
        for label in params["labels"] or []:
            query.append(("label", label))
        if params["name_contains"]:
            query.append(("name", params["name_contains"]))
        containers = client.get("/v1/containers", query=query).body
        module.exit_json(changed=False, containers=containers or [])
    except AgentError as error:
        fail_with(module, error)


def main():
    run_module(AnsibleModule(**module_spec()))


if __name__ == "__main__":
    main()
