#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: agent_info
short_description: What a Gantry agent is, runs and offers
version_added: 0.1.0
description:
  - Asks the Gantry agent of a host for its version, the kernel it runs on, the cgroup
    layout, how many containers it holds in each run state, the host's capacity and which
    optional features it offers (C(GET /v1/info)), and whether it is ready to serve
    (C(GET /readyz)).
  - Only reads. Useful to wait for a freshly started agent, and to decide in a play what to
    ask of an agent from RV(agent.features) rather than from its version.
author:
  - Gantry developers (!UNKNOWN)
options: {}
extends_documentation_fragment:
  - gantry.fleet.agent_options
  - gantry.fleet.attributes
  - gantry.fleet.attributes.actiongroup_gantry
  - gantry.fleet.attributes.info_module
  - gantry.fleet.attributes.idempotent_not_modify_state
seealso:
  - module: gantry.fleet.kernel_check
"""

EXAMPLES = r"""
- name: Ask the local agent
  gantry.fleet.agent_info:
  register: agent

- name: Show it
  ansible.builtin.debug:
    msg: >-
      gantry {{ agent.agent.version }} on {{ agent.agent.kernel.release }},
      cgroups {{ agent.agent.cgroup.layout }}, {{ agent.agent.containers.running }} running

- name: Wait for an agent that was just started
  gantry.fleet.agent_info:
    timeout: 5
  register: agent
  until: agent is succeeded and agent.ready
  retries: 30
  delay: 1

- name: Only where the agent has images
  ansible.builtin.debug:
    msg: images available
  when: agent.agent.features.images
"""

RETURN = r"""
agent:
  description: The agent's own description of itself (C(GET /v1/info)).
  returned: success
  type: dict
  contains:
    version:
      description: The agent's version.
      type: str
      returned: always
      sample: 0.1.0
    api_version:
      description: The API version it serves.
      type: str
      returned: always
      sample: v1
    hostname:
      description: The host's name.
      type: str
      returned: always
    root:
      description: The agent's state directory.
      type: str
      returned: always
      sample: /var/lib/gantry
    uptime_seconds:
      description: Seconds since the agent started.
      type: float
      returned: always
    kernel:
      description: C(release), C(version) and C(machine) of the running kernel.
      type: dict
      returned: always
    cgroup:
      description:
        - C(layout) (C(v1), C(v2) or C(hybrid)), C(v1_controllers), C(v2_controllers) and
          C(v2_mount).
      type: dict
      returned: always
    containers:
      description: How many containers it holds, C(total) and per run state.
      type: dict
      returned: always
      sample: {total: 3, created: 0, running: 2, paused: 0, stopped: 1}
    capacity:
      description: C(cpus), C(memory_bytes), C(root_disk_bytes), C(root_disk_free_bytes).
      type: dict
      returned: always
    features:
      description:
        - Which optional parts the agent has (C(images), C(network), C(exec),
          C(log_timestamps), C(cgroup_update)), each true or false.
      type: dict
      returned: always
ready:
  description: Whether the agent says it is ready to serve (C(GET /readyz) answered 200).
  returned: success
  type: bool
  sample: true
checks:
  description: The readiness checks and their results (C(database), C(cgroups), C(root)).
  returned: success
  type: dict
  sample: {database: ok, cgroups: ok, root: ok}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gantry.fleet.plugins.module_utils._agent_client import (
    AGENT_REQUIRED_BY,
    AgentError,
    agent_argument_spec,
    client_from_module,
    fail_with,
)


def module_spec():
    """The AnsibleModule arguments, shared with the controller-side action plugin."""
    return dict(
        argument_spec=agent_argument_spec(),
        supports_check_mode=True,
        required_by=AGENT_REQUIRED_BY,
    )


def run_module(module):
    client = client_from_module(module)
    try:
        info = client.get("/v1/info").body
        readiness = client.get("/readyz", ok=(503,))
    except AgentError as error:
        fail_with(module, error)
        return
    body = readiness.body if isinstance(readiness.body, dict) else {}
    module.exit_json(
        changed=False,
        agent=info,
        ready=readiness.status == 200,
        checks=body.get("checks", {}),
    )


def main():
    run_module(AnsibleModule(**module_spec()))


if __name__ == "__main__":
    main()
