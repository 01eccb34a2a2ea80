# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""gantry.fleet.network: options to the agent's network spec, and the diff it shows."""

from __future__ import annotations

import pytest
from ansible_collections.gantry.fleet.plugins.modules import network


def test_only_what_the_task_sets_is_sent():
    params = dict.fromkeys(network.SPEC_OPTIONS)
    params.update(subnet="10.89.0.0/24", internal=False)
    assert network.build_spec(params) == {"subnet": "10.89.0.0/24", "internal": False}


def test_labels_must_be_strings():
    params = dict.fromkeys(network.SPEC_OPTIONS)
    params["labels"] = {"tier": "web", "port": 80}
    with pytest.raises(ValueError) as info:
        network.build_spec(params)
    assert str(info.value).startswith("labels.port: must be a string, got int 80")


def test_agent_diff_names_the_fields_that_differ():
    answer = {
        "diff": {
            "before": {"driver": "bridge", "subnet": "10.89.0.0/24", "gateway": "10.89.0.1"},
            "after": {"driver": "bridge", "subnet": "10.90.0.0/24", "gateway": "10.90.0.1"},
        }
    }
    diff = network.agent_diff("web", answer)
    assert diff["fields"] == ["subnet", "gateway"]
    assert diff["after_header"] == "network web (differs: subnet, gateway)"
    assert diff["before"]["subnet"] == "10.89.0.0/24"


def test_agent_diff_of_a_new_network():
    diff = network.agent_diff("web", {"diff": {"before": None, "after": {"driver": "bridge"}}})
    assert diff["before"] == {"state": "absent"}
    assert diff["fields"][0] == "state"


def test_agent_fields_are_kept_when_given():
    answer = {"diff": {"before": {}, "after": {}, "fields": ["labels.tier"]}}
    assert network.agent_diff("web", answer)["fields"] == ["labels.tier"]
