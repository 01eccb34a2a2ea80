"""The OCI bundle of a container: ``config.json`` made from its normalised spec.

Starts from the runtime's hardened default (``gantry.runtime.defaults``) and applies the
container's settings; ``load_spec`` validates the result like any other spec.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from gantry.engine import blkio
from gantry.runtime import tini
from gantry.runtime.defaults import default_config
from gantry.runtime.seccomp_default import default_seccomp_config
from gantry.runtime.spec import CAPABILITIES, Spec, load_spec

__all__ = ["CONFIG_FILE", "LOG_FILE", "config_for", "spec_for", "spec_from_data"]

CONFIG_FILE: Final = "config.json"
LOG_FILE: Final = "container.log"
CPU_PERIOD: Final = 100000


def _capabilities(spec: Mapping[str, Any], base: list[str]) -> list[str]:
    if spec["privileged"]:
        return sorted(CAPABILITIES)
    add, drop = spec["capabilities"]["add"], spec["capabilities"]["drop"]
    held = set() if "ALL" in drop else set(base) - set(drop)
    held |= set(CAPABILITIES) if "ALL" in add else set(add)
    return sorted(held)


def _resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    if resources["memory"] is not None:
        memory["limit"] = resources["memory"]
    if resources["memory_swap"] is not None:
        memory["swap"] = resources["memory_swap"]
    if memory:
        out["memory"] = memory
    cpu: dict[str, Any] = {}
    if resources["cpus"] is not None:
        cpu["quota"] = int(resources["cpus"] * CPU_PERIOD)
        cpu["period"] = CPU_PERIOD
    if resources["cpu_shares"] is not None:
        cpu["shares"] = resources["cpu_shares"]
    if resources["cpuset_cpus"] is not None:
        cpu["cpus"] = resources["cpuset_cpus"]
    if cpu:
        out["cpu"] = cpu
    if resources["pids_limit"] is not None:
        out["pids"] = {"limit": resources["pids_limit"]}
    block_io = blkio.block_io(resources)
    if block_io:
        out["blockIO"] = block_io
    return out


def config_for(
    spec: Mapping[str, Any], container_id: str, cgroup_parent: str = "/gantry"
) -> dict[str, Any]:
    """The config.json data of a container with the normalised ``spec``."""
    config = default_config(
        [*spec["entrypoint"], *spec["command"]],
        spec["rootfs"],
        env=[f"{key}={value}" for key, value in spec["env"].items()],
        cwd=spec["workdir"],
        hostname=spec["hostname"],
    )
    process = config["process"]
    uid, _sep, gid = spec["user"].partition(":")
    process["user"] = {"uid": int(uid), "gid": int(gid)}
    caps = _capabilities(spec, list(process["capabilities"]["bounding"]))
    process["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
    config["root"]["readonly"] = spec["read_only"]
    linux = config["linux"]
    linux["cgroupsPath"] = f"{cgroup_parent.rstrip('/')}/{container_id}"
    linux["resources"].update(_resources(spec["resources"]))
    if spec["sysctls"]:
        linux["sysctl"] = dict(spec["sysctls"])
    if spec["network"]["mode"] == "host":
        linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "network"]
    if spec["privileged"]:
        linux["maskedPaths"] = []
        linux["readonlyPaths"] = []
        process["noNewPrivileges"] = False
        linux["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
        for mount in config["mounts"]:
            if mount["destination"] in ("/sys", "/sys/fs/cgroup"):
                mount["options"] = [option for option in mount["options"] if option != "ro"]
    else:
        linux["seccomp"] = default_seccomp_config(caps)
    for mount in spec["mounts"]:
        options = list(mount["options"])
        if mount["type"] == "bind":
            entry = {
                "destination": mount["target"],
                "type": "bind",
                "source": mount["source"],
                "options": ["rbind", *options],
            }
        else:
            entry = {
                "destination": mount["target"],
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", *options],
            }
        if mount["read_only"]:
            entry["options"].append("ro")
        config["mounts"].append(entry)
    config["annotations"] = {"org.gantry.container.id": container_id}
    if spec["init"]:
        # tini as PID 1 (gantry.runtime.tini): reaps orphans, forwards signals.
        config["annotations"][tini.ANNOTATION] = "true"
    return config


def spec_from_data(config: Mapping[str, Any]) -> Spec:
    """The validated runtime spec of config.json data (``SpecError`` naming the field)."""
    return load_spec(config)


def spec_for(bundle: Path) -> Spec:
    """The validated runtime spec of a written bundle."""
    return spec_from_data(json.loads((bundle / CONFIG_FILE).read_text()))
