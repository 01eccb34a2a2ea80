#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_info
short_description: Inspect images in a Gantry agent's image store
version_added: 0.2.0
description:
  - Returns the inspect documents of the images O(name) lists, or of every image the agent
    holds when O(name) is not given (optionally only dangling or only named ones).
  - Names the agent does not hold are left out of RV(images) and listed in RV(missing); that
    is not an error.
author:
  - Gantry developers (!UNKNOWN)
options:
  name:
    description:
      - Image references (V(busybox:1.36), V(localhost:5000/app:2)) or ids (V(sha256:...) or a
        prefix of one). Without it, all images.
    type: list
    elements: str
  dangling:
    description:
      - Without O(name) only, V(true) lists only images without a name, V(false) only named
        ones. Not set, both.
    type: bool
extends_documentation_fragment:
  - gantry.fleet.agent_options
  - gantry.fleet.attributes
  - gantry.fleet.attributes.actiongroup_gantry
  - gantry.fleet.attributes.info_module
  - gantry.fleet.attributes.idempotent_not_modify_state
seealso:
  - module: gantry.fleet.image
"""

EXAMPLES = r"""
- name: Is busybox there?
  gantry.fleet.image_info:
    name: [busybox:1.36]
  register: found

- name: Say so
  ansible.builtin.debug:
    msg: "{{ 'present, ' ~ found.images[0].id if found.images else 'missing' }}"

- name: Every image, and which containers use it
  gantry.fleet.image_info:
  register: all_images

- name: Unnamed images left behind by re-pulled tags
  gantry.fleet.image_info:
    dangling: true
  register: dangling
"""

RETURN = r"""
images:
  description:
    - The inspect document of each image found, in the order of O(name) (each image once),
      or sorted by their first name when all are listed.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The image id, the digest of its configuration (C(sha256:...)).
      type: str
      returned: always
    digest:
      description: The digest of its manifest, or null.
      type: str
      returned: always
    tags:
      description: Its names.
      type: list
      elements: str
      returned: always
    size:
      description: Its size in bytes.
      type: int
      returned: always
    created:
      description: When it was made (RFC 3339), or null.
      type: str
      returned: always
    architecture:
      description: Its CPU architecture (V(amd64)).
      type: str
      returned: always
    os:
      description: Its operating system (V(linux)).
      type: str
      returned: always
    config:
      description: The image configuration's C(config) object (C(Entrypoint), C(Cmd), C(Env), ...).
      type: dict
      returned: always
    layers:
      description: Its layers, each with C(digest), C(diff_id) and C(size).
      type: list
      elements: dict
      returned: always
    containers:
      description: The names of the containers created from it.
      type: list
      elements: str
      returned: always
missing:
  description: The names of O(name) the agent does not hold.
  returned: always
  type: list
  elements: str
  sample: [busybox:1.35]
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


def module_spec():
    """The AnsibleModule arguments (kept apart from the run, as the other modules do)."""
    return dict(
        argument_spec=agent_argument_spec(
            name=dict(type="list", elements="str"),
            dangling=dict(type="bool"),
        ),
        supports_check_mode=True,
        required_by=AGENT_REQUIRED_BY,
        mutually_exclusive=[("name", "dangling")],
    )


def run_module(module):
    client = client_from_module(module)
    images = []
    missing = []
    try:
        if module.params["name"] is not None:
            seen = set()
            for reference in module.params["name"]:
                image = client.get_or_none("/v1/images/%s" % quote_path(reference))
                if image is None:
                    missing.append(reference)
                elif image.get("id") not in seen:
                    seen.add(image.get("id"))
                    images.append(image)
        else:
            listed = (
                client.get("/v1/images", query={"dangling": module.params["dangling"]}).body or []
            )
            listed = sorted(listed, key=lambda item: (sorted(item.get("tags") or []), item["id"]))
            for item in listed:
                image = client.get_or_none("/v1/images/%s" % quote_path(item["id"]))
                if image is not None:  # removed in between: not there
                    images.append(image)
    except AgentError as error:
        fail_with(module, error)
    module.exit_json(changed=False, images=images, missing=missing)


def main():
    run_module(AnsibleModule(**module_spec()))


if __name__ == "__main__":
    main()
