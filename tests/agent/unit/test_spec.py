"""gantry.runtime.spec: loading, round-tripping and the shape of errors.

The rules themselves (one case per rule) are in test_spec_rules.py.
"""

import copy
import dataclasses
import json
import logging
import os
import pickle
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from gantry.runtime import spec as spec_module
from gantry.runtime.spec import (
    CAPABILITIES,
    RLIMITS,
    Linux,
    Namespace,
    Spec,
    SpecError,
    load_spec,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "spec"


def _find_runc() -> str | None:
    # runc lives in /usr/sbin on Debian, which is not on every user's PATH.
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    return shutil.which("runc", path=search)


@pytest.fixture(scope="session")
def runc() -> str:
    """The real runc binary (`make setup` installs Debian's runc as a reference anchor)."""
    path = _find_runc()
    if path is None:
        pytest.skip("runc is not installed (make setup installs it); it writes the reference specs")
    return path


def _runc_spec(runc: str, bundle: Path, *flags: str) -> dict[str, Any]:
    subprocess.run([runc, "spec", "--bundle", str(bundle), *flags], check=True, timeout=60)
    data: dict[str, Any] = json.loads((bundle / "config.json").read_text())
    return data


def _full() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "full.json").read_text())
    return data


# --- real runc output -----------------------------------------------------------------------


def test_runc_spec_loads_validates_and_round_trips(runc: str, tmp_path: Path) -> None:
    raw = _runc_spec(runc, tmp_path)

    spec = load_spec(raw)

    assert spec.to_dict() == raw
    assert load_spec(spec.to_dict()) == spec
    assert spec.warnings == ()
    assert spec.process is not None
    assert spec.process.args == ("sh",)
    assert spec.process.no_new_privileges is True
    assert spec.process.capabilities is not None
    assert set(spec.process.capabilities.bounding) <= set(CAPABILITIES)
    assert [r.type for r in spec.process.rlimits] == ["RLIMIT_NOFILE"]
    assert spec.root.path == "rootfs"
    assert spec.has_namespace("pid") and spec.has_namespace("net")
    assert not spec.has_namespace("user")
    assert spec.namespace_path("network") is None
    assert [m.destination for m in spec.mounts][:2] == ["/proc", "/dev"]


def test_runc_rootless_spec_loads_validates_and_round_trips(runc: str, tmp_path: Path) -> None:
    raw = _runc_spec(runc, tmp_path, "--rootless")

    spec = load_spec(raw)

    assert spec.to_dict() == raw
    assert load_spec(spec.to_dict()) == spec
    assert spec.has_namespace("user")
    assert not spec.has_namespace("network")
    assert spec.linux is not None
    assert len(spec.linux.uid_mappings) == 1
    assert spec.linux.uid_mappings[0].size == 1


def test_runc_bundle_loads_from_directory_and_file(runc: str, tmp_path: Path) -> None:
    raw = _runc_spec(runc, tmp_path)

    assert load_spec(tmp_path) == load_spec(raw)
    assert load_spec(tmp_path / "config.json") == load_spec(raw)
    assert load_spec(str(tmp_path / "config.json")) == load_spec(raw)


# --- the whole model ------------------------------------------------------------------------


def test_every_field_round_trips() -> None:
    raw = _full()

    spec = load_spec(raw)

    assert spec.to_dict() == raw
    assert load_spec(spec.to_dict()) == spec


def _objects(value: object) -> Iterator[spec_module._Model]:
    if isinstance(value, spec_module._Model):
        yield value
        for f in value._FIELDS:
            yield from _objects(getattr(value, f.name))
    elif isinstance(value, tuple):
        for item in value:
            yield from _objects(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _objects(item)


def test_full_fixture_sets_every_field_of_the_model() -> None:
    """Guards the round-trip test: a field added to the model must be added to full.json."""
    spec = load_spec(_full())
    seen: dict[type[spec_module._Model], set[str]] = {}
    for obj in _objects(spec):
        seen.setdefault(type(obj), set()).update(obj.to_dict())

    missing = {
        cls.__name__: sorted({f.key for f in cls._FIELDS} - keys)
        for cls, keys in seen.items()
        if {f.key for f in cls._FIELDS} - keys
    }
    model_classes = {
        getattr(spec_module, name)
        for name in spec_module.__all__
        if isinstance(getattr(spec_module, name), type)
        and issubclass(getattr(spec_module, name), spec_module._Model)
    }

    assert missing == {}
    assert model_classes - set(seen) == set()


def test_field_names_are_snake_case_and_keys_camel_case() -> None:
    spec = load_spec(_full())
    assert spec.linux is not None and spec.linux.resources is not None
    assert spec.linux.resources.block_io is not None
    assert spec.linux.resources.block_io.throttle_read_iops_device[0].rate == 1000
    assert spec.linux.uid_mappings[0].container_id == 0
    assert spec.process is not None and spec.process.io_priority is not None
    assert spec.process.io_priority.io_class == "IOPRIO_CLASS_BE"
    assert "kernelTCP" in spec.to_dict()["linux"]["resources"]["memory"]


def test_defaults_are_left_out_of_to_dict() -> None:
    raw = {
        "ociVersion": "1.0.0",
        "root": {"path": "/rootfs", "readonly": False},
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/"},
        "mounts": [],
        "annotations": {},
    }

    assert load_spec(raw).to_dict() == {
        "ociVersion": "1.0.0",
        "root": {"path": "/rootfs"},
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/"},
    }


def test_null_reads_as_absent() -> None:
    raw = _full()
    raw["hostname"] = None
    raw["linux"]["seccomp"] = None

    spec = load_spec(raw)

    assert spec.hostname is None
    assert spec.linux is not None and spec.linux.seccomp is None


# --- forward compatibility ------------------------------------------------------------------


def test_unknown_keys_are_ignored_everywhere() -> None:
    raw = _full()
    with_extras = copy.deepcopy(raw)
    with_extras["futureTopLevel"] = {"anything": [1, 2]}
    with_extras["windows"] = {"layerFolders": ["C:\\layers"]}
    with_extras["process"]["futureProcessKnob"] = True
    with_extras["mounts"][0]["futureMountKnob"] = "x"
    with_extras["linux"]["futureLinuxKnob"] = 7
    with_extras["linux"]["resources"]["memory"]["futureMemoryKnob"] = 1
    with_extras["linux"]["seccomp"]["syscalls"][0]["futureSyscallKnob"] = None

    spec = load_spec(with_extras)

    assert spec == load_spec(raw)
    assert spec.to_dict() == raw
    assert spec.warnings == ()


def test_unsupported_sections_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    raw = _full()
    raw["linux"]["intelRdt"] = {"closID": "guaranteed", "l3CacheSchema": "L3:0=7f0"}
    raw["process"]["commandLine"] = "app.exe --serve"

    with caplog.at_level(logging.WARNING, logger="gantry.runtime.spec"):
        spec = load_spec(raw)

    assert [w.split(":")[0] for w in spec.warnings] == ["process.commandLine", "linux.intelRdt"]
    assert "linux.intelRdt" in caplog.text
    assert spec.to_dict() == _full()
    assert spec == load_spec(_full())  # warnings do not take part in equality


def test_warnings_go_to_the_given_logger(caplog: pytest.LogCaptureFixture) -> None:
    raw = _full()
    raw["linux"]["intelRdt"] = {}
    adapter = logging.LoggerAdapter(logging.getLogger("test.container"), {"container": "c1"})

    with caplog.at_level(logging.WARNING, logger="test.container"):
        load_spec(raw, log=adapter)

    assert [r.name for r in caplog.records] == ["test.container"]


# --- errors ---------------------------------------------------------------------------------


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("[1, 2]")

    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path)

    assert caught.value.errors == [("", "expected an object, got array")]
    assert "(top level): expected an object" in str(caught.value)


def test_invalid_json_is_a_spec_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"ociVersion": ')

    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path)

    assert caught.value.errors[0][0] == ""
    assert "not valid JSON" in caught.value.errors[0][1]


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_spec(tmp_path / "nope.json")


def test_all_errors_are_reported_at_once() -> None:
    raw = _full()
    raw["process"]["capabilities"]["bounding"][2] = "CAP_FLY"
    raw["process"]["cwd"] = "srv"
    raw["mounts"][1]["destination"] = "data"
    raw["linux"]["namespaces"][1]["type"] = "net"
    raw["hooks"]["poststop"][0]["timeout"] = 0
    del raw["root"]["path"]

    with pytest.raises(SpecError) as caught:
        load_spec(raw)

    paths = [path for path, _message in caught.value.errors]
    assert sorted(paths) == sorted(
        [
            "process.capabilities.bounding[2]",
            "process.cwd",
            "mounts[1].destination",
            "linux.namespaces[1].type",
            "hooks.poststop[0].timeout",
            "root.path",
        ]
    )
    message = str(caught.value)
    assert message.startswith("invalid runtime spec: ")
    for path, text in caught.value.errors:
        assert f"{path}: {text}" in message


def test_cross_field_rules_are_reported_alongside_field_errors() -> None:
    raw = _full()
    raw["process"]["cwd"] = "srv"  # a field error in process ...
    raw["linux"]["sysctl"]["vm.swappiness"] = "10"  # ... and a cross-field one in linux

    with pytest.raises(SpecError) as caught:
        load_spec(raw)

    assert [p for p, _message in caught.value.errors] == [
        "process.cwd",
        'linux.sysctl["vm.swappiness"]',
    ]


def test_spec_error_survives_pickling() -> None:
    error = SpecError([("process.cwd", "must be an absolute path")])

    clone = pickle.loads(pickle.dumps(error))

    assert clone.errors == error.errors
    assert str(clone) == str(error)
    assert isinstance(error, ValueError)


# --- the value ------------------------------------------------------------------------------


def test_spec_is_frozen_all_the_way_down() -> None:
    spec = load_spec(_full())
    assert spec.linux is not None

    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.hostname = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.linux.namespaces[0].type = "net"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.linux.sysctl["vm.swappiness"] = "1"  # type: ignore[index]
    # Slotted: no new attributes either (3.11 reports it as TypeError, later as AttributeError).
    with pytest.raises((AttributeError, TypeError)):
        spec.not_a_field = 1  # type: ignore[attr-defined]
    assert isinstance(spec.mounts, tuple)


def test_namespace_helpers() -> None:
    spec = load_spec(_full())

    assert spec.has_namespace("user")
    assert spec.has_namespace("network") and spec.has_namespace("net")
    assert spec.has_namespace("mnt")
    assert spec.namespace_path("net") == "/var/run/netns/app-1"
    assert spec.namespace_path("pid") is None
    assert spec.namespace("time") == Namespace(type="time")
    with pytest.raises(ValueError, match="unknown namespace type"):
        spec.has_namespace("nett")


def test_namespace_helpers_without_linux_section() -> None:
    spec = load_spec({"ociVersion": "1.2.0", "root": {"path": "rootfs"}})

    assert spec.linux is None
    assert not spec.has_namespace("pid")
    assert spec.namespace_path("net") is None
    with pytest.raises(ValueError):
        spec.namespace("bogus")


def test_private_network_means_new_or_joined_but_not_the_hosts() -> None:
    def linux(*namespaces: Namespace) -> Linux:
        return Linux(namespaces=namespaces)

    assert linux(Namespace(type="network")).has_private_network()
    assert linux(Namespace(type="network", path="/run/netns/a")).has_private_network()
    assert not linux(Namespace(type="network", path="/proc/1/ns/net")).has_private_network()
    assert not linux(
        Namespace(type="network", path="/proc/self/ns/../ns/net")
    ).has_private_network()
    assert not linux().has_private_network()


def test_vocabularies_match_the_kernel_numbers() -> None:
    assert CAPABILITIES["CAP_CHOWN"] == 0
    assert CAPABILITIES["CAP_SYS_ADMIN"] == 21
    assert CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40
    assert len(CAPABILITIES) == 41
    assert RLIMITS["RLIMIT_NOFILE"] == 7
    assert RLIMITS["RLIMIT_RTTIME"] == 15


def test_spec_type_is_exported() -> None:
    assert isinstance(load_spec(_full()), Spec)
