# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# SPDX-License-Identifier: Apache-2.0

"""gantry.fleet.kernel_check: the module's main() against crafted kernel configurations.

Each test hands the module its arguments the way ansible-core 2.19 wants them patched in
(ansible.module_utils.testing.patch_module_args), runs main() and reads the JSON it prints.
The configurations are written for another kernel version than the running one, so the
engine judges them on their own and leaves what only the running kernel can tell (probes,
sysctls, cgroup controllers) as skipped: the results do not depend on this machine.
"""

from __future__ import annotations

import gzip
import json

import pytest
import yaml
from ansible.module_utils.common import warnings as module_warnings
from ansible.module_utils.testing import patch_module_args
from ansible_collections.gantry.fleet.plugins.module_utils import _kernel_check as engine
from ansible_collections.gantry.fleet.plugins.modules import kernel_check

# Not the running kernel (no kernel has this version), so nothing here is probed.
HEADER = (
    "#\n"
    "# Automatically generated file; DO NOT EDIT.\n"
    "# Linux/x86_64 6.1.999 Kernel Configuration\n"
    "#\n"
)
DEFAULT_FEATURES = [name for name, _description, default in engine.FEATURES if default]
ALL_FEATURES = [name for name, _description, _default in engine.FEATURES]


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Warnings are process-wide in ansible-core; each test starts with none."""
    monkeypatch.setattr(module_warnings, "_global_warnings", {})


def warning_messages(result):
    """The text of each warning (2.19 returns them as structured events)."""
    return [
        warning["event"]["msg"] if isinstance(warning, dict) else warning
        for warning in result.get("warnings", [])
    ]


def run_module(capsys, **args):
    """Run the module with these arguments; return (exit status, result)."""
    with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
        kernel_check.main()
    return exit_info.value.code, json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def kconfig_options(tmp_path_factory):
    """Every kernel option the engine checks, as the engine names them (CONFIG_…)."""
    seed = tmp_path_factory.mktemp("seed") / "config"
    seed.write_text(HEADER + "CONFIG_NAMESPACES=y\n")
    report = engine.run_checks(config_path=str(seed), features=ALL_FEATURES, probes=False)
    options = [item["id"] for item in report["items"] if item["kind"] == "kconfig"]
    assert "CONFIG_PID_NS" in options
    return options


@pytest.fixture
def write_config(tmp_path, kconfig_options):
    """Write a configuration with every checked option built in, except those left out."""

    def write(name="config", without=(), compress=False):
        lines = [HEADER]
        for option in kconfig_options:
            if option in without:
                # How the kernel's own configurator writes an option that is off.
                lines.append("# %s is not set\n" % option)
            else:
                lines.append("%s=y\n" % option)
        text = "".join(lines)
        path = tmp_path / name
        if compress:
            path.write_bytes(gzip.compress(text.encode()))
        else:
            path.write_text(text)
        return str(path)

    return write


def test_complete_configuration_passes(capsys, write_config):
    status, result = run_module(capsys, config_path=write_config(), features=["namespaces"])

    assert status == 0
    assert not result.get("failed")
    assert result["changed"] is False
    assert result["missing"] == []
    assert result["exit_code"] == engine.EXIT_OK
    report = result["ansible_facts"]["gantry_kernel"]
    assert report["schema"] == 1
    assert report["kernel"]["running"] is False
    assert report["kernel"]["release"] == "6.1.999"
    assert report["features"]["namespaces"] == {"requested": True, "status": "ok", "missing": []}
    assert result["cgroup_layout"] == report["cgroup"]["layout"]
    assert result["msg"] == engine.missing_summary(report)
    assert warning_messages(result) == []


def test_missing_pid_ns_fails_naming_it_and_the_fix(capsys, write_config):
    config = write_config(without=["CONFIG_PID_NS"])
    report = engine.run_checks(config_path=config, features=["namespaces"])
    item = next(item for item in report["items"] if item["id"] == "CONFIG_PID_NS")
    assert item["status"] == "missing"
    assert item["hint"]

    status, result = run_module(capsys, config_path=config, features=["namespaces"])

    assert status == 1
    assert result["failed"] is True
    assert result["changed"] is False
    assert result["exit_code"] == engine.EXIT_MISSING
    # One message: the option, what it is and how to fix it.
    assert result["msg"] == engine.missing_summary(report)
    assert "CONFIG_PID_NS" in result["msg"]
    assert item["label"] in result["msg"]
    assert item["hint"] in result["msg"]
    expected = {"id": "CONFIG_PID_NS", "label": item["label"], "hint": item["hint"]}
    assert result["missing"] == [expected]
    # The report stays out of a failure, so the message is what gets read.
    assert "ansible_facts" not in result


def test_missing_items_of_every_failing_feature_are_in_one_message(capsys, write_config):
    config = write_config(without=["CONFIG_PID_NS", "CONFIG_OVERLAY_FS"])

    status, result = run_module(capsys, config_path=config, features=["namespaces", "overlay"])

    assert status == 1
    assert [item["id"] for item in result["missing"]] == ["CONFIG_PID_NS", "CONFIG_OVERLAY_FS"]
    for item in result["missing"]:
        assert item["id"] in result["msg"]
        assert item["hint"] in result["msg"]


def test_fail_on_missing_false_reports_and_succeeds(capsys, write_config):
    config = write_config(without=["CONFIG_PID_NS"])

    status, result = run_module(
        capsys, config_path=config, features=["namespaces"], fail_on_missing=False
    )

    assert status == 0
    assert not result.get("failed")
    assert result["exit_code"] == engine.EXIT_MISSING
    assert [item["id"] for item in result["missing"]] == ["CONFIG_PID_NS"]
    assert "CONFIG_PID_NS" in result["msg"]
    report = result["ansible_facts"]["gantry_kernel"]
    assert report["features"]["namespaces"]["status"] == "missing"
    assert report["summary"]["required_missing"] == ["CONFIG_PID_NS"]


def test_option_not_requested_does_not_fail(capsys, write_config):
    # PID namespaces are not needed for overlay mounts: the item is a warning, not a failure.
    config = write_config(without=["CONFIG_PID_NS"])

    status, result = run_module(capsys, config_path=config, features=["overlay"])

    assert status == 0
    assert result["missing"] == []
    items = result["ansible_facts"]["gantry_kernel"]["items"]
    assert next(item for item in items if item["id"] == "CONFIG_PID_NS")["status"] == "warn"


def test_gzip_configuration_is_read(capsys, write_config):
    config = write_config(name="config.gz", without=["CONFIG_PID_NS"], compress=True)

    status, result = run_module(
        capsys, config_path=config, features=["namespaces"], fail_on_missing=False
    )

    assert status == 0
    assert result["ansible_facts"]["gantry_kernel"]["config"]["path"] == config
    assert [item["id"] for item in result["missing"]] == ["CONFIG_PID_NS"]


@pytest.mark.parametrize("fail_on_missing", [True, False])
@pytest.mark.parametrize("without", [(), ("CONFIG_PID_NS",)])
def test_check_mode_gives_the_same_result(capsys, write_config, without, fail_on_missing):
    config = write_config(without=without)
    args = dict(
        config_path=config, features=["namespaces", "overlay"], fail_on_missing=fail_on_missing
    )

    status, result = run_module(capsys, **args)
    checked_status, checked = run_module(capsys, _ansible_check_mode=True, **args)

    assert checked_status == status
    assert checked["changed"] is False
    for key in ("missing", "exit_code", "cgroup_layout", "msg"):
        assert checked[key] == result[key]
    assert checked.get("ansible_facts") == result.get("ansible_facts")


def test_unknown_feature_fails_naming_it(capsys):
    status, result = run_module(capsys, features=["namespaces", "warp_drive"])

    assert status == 1
    assert result["failed"] is True
    assert "warp_drive" in result["msg"]
    assert "features" in result["msg"]
    assert "ansible_facts" not in result


def test_unreadable_configuration_warns_and_does_not_fail(capsys, tmp_path):
    missing = str(tmp_path / "no-such-config")

    status, result = run_module(capsys, config_path=missing, features=["namespaces"], probes=False)

    assert status == 0
    assert not result.get("failed")
    report = result["ansible_facts"]["gantry_kernel"]
    assert report["config"]["readable"] is False
    assert result["exit_code"] == engine.EXIT_UNREADABLE
    assert result["missing"] == []
    assert report["features"]["namespaces"]["status"] == "unknown"
    (warning,) = warning_messages(result)
    assert missing in warning
    assert "namespaces" in warning
    assert "config_path" in warning


def test_not_a_configuration_is_unreadable(capsys, tmp_path):
    junk = tmp_path / "junk"
    junk.write_text("this is not a kernel configuration\n")

    status, result = run_module(
        capsys, config_path=str(junk), features=["namespaces"], probes=False
    )

    assert status == 0
    assert result["exit_code"] == engine.EXIT_UNREADABLE
    (warning,) = warning_messages(result)
    assert str(junk) in warning


@pytest.mark.parametrize("features", [None, []])
def test_default_features(capsys, write_config, features):
    args = dict(config_path=write_config(), fail_on_missing=False)
    if features is not None:
        args["features"] = features

    status, result = run_module(capsys, **args)

    assert status == 0
    requested = [
        name
        for name, feature in result["ansible_facts"]["gantry_kernel"]["features"].items()
        if feature["requested"]
    ]
    assert sorted(requested) == sorted(DEFAULT_FEATURES)


def test_argument_spec_follows_the_engine():
    spec = kernel_check.argument_spec()

    assert spec["features"]["choices"] == ALL_FEATURES
    assert spec["features"]["default"] == DEFAULT_FEATURES


def test_documented_choices_and_default_follow_the_engine():
    # The DOCUMENTATION block is static text; it must name the engine's features.
    options = yaml.safe_load(kernel_check.DOCUMENTATION)["options"]
    assert list(options["features"]["choices"]) == ALL_FEATURES
    assert options["features"]["default"] == DEFAULT_FEATURES
