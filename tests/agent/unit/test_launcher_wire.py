"""The launcher's pieces that need no root: its answers turned back into the supervisor's
exceptions, and its spec loader that decodes each distinct seccomp section once."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from gantry.runtime import state as st
from gantry.runtime import supervisor as sv
from gantry.runtime.defaults import DEFAULT_CAPABILITIES, default_config
from gantry.runtime.launcher import LauncherError, _error_from, _SpecLoader
from gantry.runtime.process import ContainerInitError
from gantry.runtime.seccomp_default import default_seccomp_config
from gantry.runtime.spec import SpecError, load_spec

LOG = logging.LoggerAdapter(logging.getLogger("test"), {})


def test_answers_become_the_supervisors_exceptions() -> None:
    state = _error_from({"ok": False, "error": "state", "message": "container 'x' already exists"})
    assert isinstance(state, st.StateError) and "already exists" in str(state)
    init = _error_from({"ok": False, "error": "init", "step": "rootfs", "message": "m", "errno": 2})
    assert isinstance(init, ContainerInitError)
    assert (init.step, init.message, init.errno) == ("rootfs", "m", 2)
    spec = _error_from({"ok": False, "error": "spec", "errors": [["process.cwd", "relative"]]})
    assert isinstance(spec, SpecError) and spec.errors == [("process.cwd", "relative")]
    assert isinstance(_error_from({"error": "runtime", "message": "m"}), sv.RuntimeError_)
    assert isinstance(_error_from({"error": "value", "message": "m"}), ValueError)
    assert isinstance(_error_from({"error": "internal", "message": "m"}), LauncherError)
    assert isinstance(_error_from({}), LauncherError)


def _config(caps: list[str] | None = None, **linux: Any) -> dict[str, Any]:
    config = default_config(["/bin/true"], "rootfs")
    config["linux"]["seccomp"] = default_seccomp_config(caps or DEFAULT_CAPABILITIES)
    config["linux"].update(linux)
    return config


def test_the_loader_gives_what_load_spec_gives(tmp_path: Path) -> None:
    loader = _SpecLoader()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_config()))
    first = loader.load(path, LOG)
    assert first == load_spec(path)
    # Second time the section comes from the cache; the rest is decoded again.
    other = _config(sysctl={"net.ipv4.ip_forward": "1"})
    second = loader.load(other, LOG)
    assert second == load_spec(other)
    assert second.linux is not None and first.linux is not None
    assert second.linux.seccomp is first.linux.seccomp
    assert dict(second.linux.sysctl) == {"net.ipv4.ip_forward": "1"}


def test_a_different_section_is_decoded_on_its_own() -> None:
    loader = _SpecLoader()
    default = loader.load(_config(), LOG)
    admin = loader.load(_config([*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"]), LOG)
    assert default.linux is not None and admin.linux is not None
    assert default.linux.seccomp != admin.linux.seccomp


def test_a_bad_section_is_refused_every_time() -> None:
    loader = _SpecLoader()
    config = _config()
    config["linux"]["seccomp"]["defaultAction"] = "SCMP_ACT_NOPE"
    for _attempt in range(2):
        with pytest.raises(SpecError, match=r"linux\.seccomp\.defaultAction"):
            loader.load(config, LOG)
    # A bad field elsewhere is found even when the section is cached.
    loader.load(_config(), LOG)
    broken = _config()
    broken["process"]["cwd"] = "relative"
    with pytest.raises(SpecError, match=r"process\.cwd"):
        loader.load(broken, LOG)


def test_a_spec_without_seccomp_is_loaded_as_is() -> None:
    config = default_config(["/bin/true"], "rootfs")
    assert _SpecLoader().load(config, LOG) == load_spec(config)
