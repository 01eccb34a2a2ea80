# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The options every gantry.fleet module that talks to a Gantry agent takes.

Declared once here and once in the argument spec of
``plugins/module_utils/_agent_client.py`` (AGENT_ARGUMENT_SPEC); the two must agree, and the
sanity validate-modules test checks that they do for every module.
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  agent_url:
    description:
      - Where the Gantry agent listens.
      - V(unix:///path/to/agent.sock) (or just the absolute path) talks HTTP over that unix
        socket on the managed host; this is how a module reaches the agent of the host it
        runs on.
      - V(https://HOST:PORT) talks HTTPS to an agent served with C(--listen), authenticated
        with O(client_cert)/O(client_key) or O(agent_token). Plain C(http) URLs are refused,
        because the agent serves TCP only with TLS.
      - If not set, the environment variable E(GANTRY_AGENT_URL) (or E(GANTRY_URL), which the
        C(gantry) command line also reads) is used.
    type: str
    default: unix:///run/gantry/agent.sock
  agent_token:
    description:
      - A bearer token the agent accepts, sent in the C(Authorization) header as
        C(Bearer TOKEN).
      - If not set, the environment variable E(GANTRY_AGENT_TOKEN) (or E(GANTRY_TOKEN)) is used.
    type: str
  ca_path:
    description:
      - A PEM file of the certificate authorities to trust for the agent's HTTPS certificate.
        Without it, the system's trust store is used.
      - If not set, the environment variable E(GANTRY_AGENT_CA_PATH) is used.
    type: path
  client_cert:
    description:
      - A PEM client certificate to present to the agent (mutual TLS). It may also hold the key.
      - If not set, the environment variable E(GANTRY_AGENT_CLIENT_CERT) is used.
    type: path
  client_key:
    description:
      - The PEM private key of O(client_cert), when the certificate file does not hold it.
      - If not set, the environment variable E(GANTRY_AGENT_CLIENT_KEY) is used.
    type: path
  validate_certs:
    description:
      - Check the agent's HTTPS certificate against O(ca_path) (or the system's trust store) and
        its host name against O(agent_url). Set V(false) only on a test bench.
      - If not set, the environment variable E(GANTRY_AGENT_VALIDATE_CERTS) is used.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for the agent to answer one request. Long-running work (image pulls,
        waiting for health) is waited for in several requests, each within this limit, up to
        the module's own wait options.
      - If not set, the environment variable E(GANTRY_AGENT_TIMEOUT) is used.
    type: int
    default: 60
requirements:
  - Python on the managed host. The modules use ansible-core's own HTTP helpers; no Python
    package needs installing.
notes:
  - The options above can be set once for a play, in C(module_defaults) under
    C(group/gantry.fleet.gantry).
  - The agent's socket is readable by root (or the C(gantry) group) only, so run modules that
    use it with C(become) unless the remote user is in that group.
"""
