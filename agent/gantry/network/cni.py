"""Run CNI plugins by the CNI specification (1.0, with the 1.1 GC and STATUS verbs).

A runtime talks to a plugin through its environment (``CNI_COMMAND``, ``CNI_CONTAINERID``,
``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_ARGS``, ``CNI_PATH``), one JSON network configuration
on stdin, and a JSON result or error on stdout. A network configuration *list* (conflist)
chains plugins: ADD runs them in order, each getting the previous one's result as
``prevResult``; DEL runs them in reverse, each getting the cached result of the ADD. That
cache (one JSON file per attachment, the same idea as libcni's ``/var/lib/cni/results``)
holds the exact configuration bytes that were used, so DEL still works after an agent
restart or after the configuration changed on disk.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gantry.network.errors import CNIError, InvalidNetworkInput, NetworkError

SPEC_VERSIONS: Final = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
"""Every CNI spec version this runtime can speak (configurations and results)."""

DEFAULT_PLUGIN_DIRS: Final = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
DEFAULT_CONFIG_DIRS: Final = (Path("/etc/cni/net.d"),)
PLUGIN_TIMEOUT: Final = 60.0
CACHE_KIND: Final = "cniCacheV1"

_NAME_RE: Final = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
# CNI_CONTAINERID: "alphanumeric, plus _ . -", starting with an alphanumeric (spec 1.0).
_CONTAINER_ID_RE: Final = _NAME_RE
_IFNAME_BAD: Final = re.compile(r"[/:\s]")
_CNI_ARG_RE: Final = re.compile(r"^[^=;]+$")


def version_tuple(version: str) -> tuple[int, ...]:
    """Return ``"1.0.0"`` as ``(1, 0, 0)``; ``ValueError`` for anything else."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a CNI version: {version!r}")
    return tuple(int(p) for p in parts)


@dataclass(frozen=True)
class NetworkConfigList:
    """A validated network configuration list: a name, a spec version and its plugins.

    ``raw`` is the canonical JSON text the plugins' configurations are derived from and
    the text stored in the result cache.
    """

    name: str
    cni_version: str
    plugins: tuple[Mapping[str, Any], ...]
    disable_check: bool = False
    disable_gc: bool = False
    source: str = ""

    @property
    def raw(self) -> bytes:
        doc: dict[str, Any] = {
            "cniVersion": self.cni_version,
            "name": self.name,
            "plugins": [dict(p) for p in self.plugins],
        }
        if self.disable_check:
            doc["disableCheck"] = True
        if self.disable_gc:
            doc["disableGC"] = True
        return json.dumps(doc, sort_keys=True).encode()

    @property
    def plugin_types(self) -> tuple[str, ...]:
        return tuple(str(p["type"]) for p in self.plugins)

    @classmethod
    def from_dict(cls, doc: object, source: str = "<config>") -> NetworkConfigList:
        """Validate a conflist (``{"plugins": [...]}``) or a single-plugin ``.conf``.

        Raises :class:`InvalidNetworkInput` naming the field (prefixed by ``source``).
        """
        if not isinstance(doc, dict):
            raise InvalidNetworkInput(source, "a network configuration must be a JSON object")
        name = doc.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise InvalidNetworkInput(
                f"{source}: name",
                f"must be a string of letters, digits, '_', '.', '-' (got {name!r})",
            )
        version = doc.get("cniVersion")
        if not isinstance(version, str) or version not in SPEC_VERSIONS:
            raise InvalidNetworkInput(
                f"{source}: cniVersion",
                f"must be one of {', '.join(SPEC_VERSIONS)} (got {version!r})",
            )
        if "plugins" in doc:
            plugins = doc["plugins"]
            if not isinstance(plugins, list) or not plugins:
                raise InvalidNetworkInput(f"{source}: plugins", "must be a non-empty list")
        elif "type" in doc:
            # A single-plugin .conf (removed from spec 1.0 but still common on disk): it
            # is the one plugin of a list, as libcni's ConfListFromConf does.
            plugins = [{k: v for k, v in doc.items() if k not in ("cniVersion", "name")}]
        else:
            raise InvalidNetworkInput(f"{source}: plugins", "missing (and no 'type' either)")
        checked: list[Mapping[str, Any]] = []
        for index, plugin in enumerate(plugins):
            where = f"{source}: plugins[{index}]"
            if not isinstance(plugin, dict):
                raise InvalidNetworkInput(where, "must be a JSON object")
            kind = plugin.get("type")
            if not isinstance(kind, str) or not kind or "/" in kind or kind.startswith("."):
                raise InvalidNetworkInput(f"{where}.type", f"must be a plugin name (got {kind!r})")
            caps = plugin.get("capabilities", {})
            if not isinstance(caps, dict):
                raise InvalidNetworkInput(f"{where}.capabilities", "must be a JSON object")
            checked.append(plugin)
        for flag in ("disableCheck", "disableGC"):
            if not isinstance(doc.get(flag, False), bool):
                raise InvalidNetworkInput(f"{source}: {flag}", "must be true or false")
        return cls(
            name=name,
            cni_version=version,
            plugins=tuple(checked),
            disable_check=bool(doc.get("disableCheck", False)),
            disable_gc=bool(doc.get("disableGC", False)),
            source=source,
        )

    @classmethod
    def from_bytes(cls, data: bytes | str, source: str = "<config>") -> NetworkConfigList:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidNetworkInput(source, f"not valid JSON: {exc}") from None
        return cls.from_dict(doc, source)

    @classmethod
    def from_file(cls, path: Path) -> NetworkConfigList:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidNetworkInput(str(path), f"cannot read: {exc.strerror}") from None
        return cls.from_bytes(data, str(path))


@dataclass(frozen=True)
class ConfigDirScan:
    """What :func:`load_config_dirs` found: valid lists by name, and the files it refused."""

    networks: dict[str, NetworkConfigList]
    errors: dict[str, str]


def load_config_dirs(dirs: Sequence[Path]) -> ConfigDirScan:
    """Load every ``*.conflist``, ``*.conf`` and ``*.json`` of ``dirs`` in lexical order.

    The first file that defines a network name wins (as libcni picks by file order); a
    later duplicate and every invalid file are reported in ``errors`` instead of failing.
    """
    networks: dict[str, NetworkConfigList] = {}
    errors: dict[str, str] = {}
    for directory in dirs:
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        for fname in names:
            path = directory / fname
            if path.suffix not in (".conflist", ".conf", ".json") or not path.is_file():
                continue
            try:
                conf = NetworkConfigList.from_file(path)
            except InvalidNetworkInput as exc:
                errors[str(path)] = str(exc)
                continue
            if conf.name in networks:
                errors[str(path)] = (
                    f"network {conf.name!r} is already defined by {networks[conf.name].source}"
                )
                continue
            networks[conf.name] = conf
    return ConfigDirScan(networks, errors)


@dataclass(frozen=True)
class RuntimeConf:
    """One attachment's dynamic part: which container, namespace and interface.

    ``capability_args`` maps a capability name (``portMappings``, ``ips``, ``mac``,
    ``dns``…) to its value; a plugin gets it in ``runtimeConfig`` only when its
    configuration enables that capability.
    """

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()
    capability_args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _CONTAINER_ID_RE.match(self.container_id):
            raise InvalidNetworkInput(
                "container_id",
                f"must be letters, digits, '_', '.', '-' (got {self.container_id!r})",
            )
        if not self.ifname or len(self.ifname) > 15 or _IFNAME_BAD.search(self.ifname):
            raise InvalidNetworkInput("ifname", f"not a valid interface name: {self.ifname!r}")
        for key, value in self.args:
            if not _CNI_ARG_RE.match(key) or ";" in value:
                raise InvalidNetworkInput("args", f"bad CNI_ARGS pair {key!r}={value!r}")

    @property
    def cni_args(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.args)


@dataclass(frozen=True)
class CachedAttachment:
    """One cached ADD: what DEL, CHECK and recovery need after a restart."""

    path: Path
    container_id: str
    network_name: str
    ifname: str
    config: NetworkConfigList
    netns: str
    args: tuple[tuple[str, str], ...]
    capability_args: Mapping[str, Any]
    result: Mapping[str, Any]

    def runtime_conf(self, netns: str | None = None) -> RuntimeConf:
        return RuntimeConf(
            container_id=self.container_id,
            netns=self.netns if netns is None else netns,
            ifname=self.ifname,
            args=self.args,
            capability_args=self.capability_args,
        )


class CNI:
    """Executes plugins from ``plugin_dirs``; caches ADD results under ``cache_dir``."""

    def __init__(
        self,
        plugin_dirs: Sequence[Path] = DEFAULT_PLUGIN_DIRS,
        cache_dir: Path = Path("/var/lib/gantry/network/cni-cache"),
        timeout: float = PLUGIN_TIMEOUT,
    ) -> None:
        self.plugin_dirs = tuple(Path(d) for d in plugin_dirs)
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout

    # -- plugins -------------------------------------------------------------------------

    def find_plugin(self, kind: str) -> Path:
        """Return the executable of plugin ``kind`` from the first plugin dir that has it."""
        for directory in self.plugin_dirs:
            candidate = directory / kind
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        shown = ":".join(str(d) for d in self.plugin_dirs)
        raise CNIError(kind, "find", 0, f"plugin {kind!r} not found in {shown}")

    def _exec(
        self,
        kind: str,
        command: str,
        stdin: Mapping[str, Any],
        rt: RuntimeConf | None,
    ) -> dict[str, Any] | None:
        path = self.find_plugin(kind)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_PATH": ":".join(str(d) for d in self.plugin_dirs),
        }
        if rt is not None:
            env.update(
                CNI_CONTAINERID=rt.container_id,
                CNI_NETNS=rt.netns,
                CNI_IFNAME=rt.ifname,
                CNI_ARGS=rt.cni_args,
            )
        try:
            proc = subprocess.run(
                [str(path)],
                input=json.dumps(stdin).encode(),
                capture_output=True,
                env=env,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CNIError(kind, command, 0, f"no answer within {self.timeout:g}s") from None
        except OSError as exc:
            raise CNIError(kind, command, 0, f"cannot run {path}: {exc.strerror}") from None
        out = proc.stdout.strip()
        if proc.returncode != 0:
            raise _plugin_error(kind, command, proc.returncode, out, proc.stderr)
        if not out:
            return None
        try:
            doc = json.loads(out)
        except ValueError:
            raise CNIError(kind, command, 0, f"answered no JSON: {out[:200]!r}") from None
        if not isinstance(doc, dict):
            raise CNIError(kind, command, 0, f"answered a non-object: {out[:200]!r}")
        return doc

    def version(self, kind: str, cni_version: str = "1.0.0") -> tuple[str, ...]:
        """Run VERSION: the spec versions plugin ``kind`` supports."""
        doc = self._exec(kind, "VERSION", {"cniVersion": cni_version}, None)
        versions = (doc or {}).get("supportedVersions")
        if not isinstance(versions, list):
            raise CNIError(kind, "VERSION", 0, "answered no supportedVersions")
        return tuple(str(v) for v in versions)

    # -- per-plugin configuration ----------------------------------------------------------

    @staticmethod
    def plugin_config(
        conflist: NetworkConfigList,
        plugin: Mapping[str, Any],
        rt: RuntimeConf | None,
        prev_result: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """Derive what one plugin gets on stdin: its configuration plus ``name``,
        ``cniVersion``, ``runtimeConfig`` (for the capabilities it enables) and
        ``prevResult``."""
        conf = dict(plugin)
        conf["name"] = conflist.name
        conf["cniVersion"] = conflist.cni_version
        if rt is not None:
            enabled = plugin.get("capabilities") or {}
            runtime = {k: v for k, v in rt.capability_args.items() if enabled.get(k)}
            if runtime:
                conf["runtimeConfig"] = runtime
        conf.pop("prevResult", None)
        if prev_result is not None:
            conf["prevResult"] = dict(prev_result)
        return conf

    # -- the verbs ------------------------------------------------------------------------

    def add(self, conflist: NetworkConfigList, rt: RuntimeConf) -> dict[str, Any]:
        """ADD every plugin in order and cache the final result; on failure DEL what was
        added (best effort) and raise the plugin's error."""
        result: dict[str, Any] | None = None
        for plugin in conflist.plugins:
            conf = self.plugin_config(conflist, plugin, rt, result)
            try:
                answer = self._exec(str(plugin["type"]), "ADD", conf, rt)
            except CNIError:
                with contextlib.suppress(NetworkError):
                    self._delete_plugins(conflist, rt, result)
                raise
            if answer is not None:
                result = answer
        final = result or {"cniVersion": conflist.cni_version}
        self._write_cache(conflist, rt, final)
        return final

    def check(self, conflist: NetworkConfigList, rt: RuntimeConf) -> None:
        """CHECK every plugin with the cached ADD result (spec 0.4.0 and later)."""
        if version_tuple(conflist.cni_version) < (0, 4, 0) or conflist.disable_check:
            return
        cached = self.cached(conflist.name, rt.container_id, rt.ifname)
        if cached is None:
            raise CNIError(
                conflist.name, "CHECK", 0, f"no cached result for container {rt.container_id}"
            )
        for plugin in conflist.plugins:
            conf = self.plugin_config(conflist, plugin, rt, cached.result)
            self._exec(str(plugin["type"]), "CHECK", conf, rt)

    def delete(self, conflist: NetworkConfigList | None, rt: RuntimeConf) -> None:
        """DEL an attachment, with the cached configuration and result when there are
        some (so a changed or removed configuration still cleans up what ADD made)."""
        cache_key = conflist.name if conflist is not None else None
        cached = (
            self.cached(cache_key, rt.container_id, rt.ifname) if cache_key is not None else None
        )
        use = cached.config if cached is not None else conflist
        if use is None:
            raise NetworkError(f"nothing known to DEL for container {rt.container_id}")
        if cached is not None:
            rt = RuntimeConf(
                container_id=rt.container_id,
                netns=rt.netns,
                ifname=rt.ifname,
                args=rt.args or cached.args,
                capability_args=rt.capability_args or cached.capability_args,
            )
        self._delete_plugins(use, rt, cached.result if cached is not None else None)
        self._cache_path(use.name, rt.container_id, rt.ifname).unlink(missing_ok=True)

    def delete_cached(self, cached: CachedAttachment, netns: str | None = None) -> None:
        """DEL a cached attachment (recovery: the configuration may no longer exist)."""
        self._delete_plugins(cached.config, cached.runtime_conf(netns), cached.result)
        cached.path.unlink(missing_ok=True)

    def _delete_plugins(
        self,
        conflist: NetworkConfigList,
        rt: RuntimeConf,
        prev_result: Mapping[str, Any] | None,
    ) -> None:
        # Spec: DEL runs the list in reverse and must not stop at the first error, so one
        # failing plugin cannot keep the others' resources (IPs, rules) allocated.
        first: CNIError | None = None
        use_prev = prev_result if version_tuple(conflist.cni_version) >= (0, 4, 0) else None
        for plugin in reversed(conflist.plugins):
            conf = self.plugin_config(conflist, plugin, rt, use_prev)
            try:
                self._exec(str(plugin["type"]), "DEL", conf, rt)
            except CNIError as exc:
                first = first or exc
        if first is not None:
            raise first

    def status(self, conflist: NetworkConfigList) -> None:
        """STATUS (spec 1.1): raise the first plugin's error if one is not ready.

        Lists older than 1.1.0 have no STATUS; they count as ready."""
        if version_tuple(conflist.cni_version) < (1, 1, 0):
            return
        for plugin in conflist.plugins:
            self._exec(
                str(plugin["type"]),
                "STATUS",
                self.plugin_config(conflist, plugin, None, None),
                None,
            )

    def gc(self, conflist: NetworkConfigList, valid: Sequence[tuple[str, str]]) -> list[str]:
        """Garbage-collect ``conflist``: DEL every cached attachment of it that is not in
        ``valid`` (pairs of container id and interface name), then, for spec 1.1 lists
        without ``disableGC``, run the plugins' GC verb with the valid attachments.

        Returns the container ids that were DELeted."""
        keep = set(valid)
        removed: list[str] = []
        for cached in self.cached_attachments():
            if cached.network_name != conflist.name:
                continue
            if (cached.container_id, cached.ifname) in keep:
                continue
            with contextlib.suppress(CNIError):
                self.delete_cached(cached, netns="")
            cached.path.unlink(missing_ok=True)
            removed.append(cached.container_id)
        if version_tuple(conflist.cni_version) >= (1, 1, 0) and not conflist.disable_gc:
            attachments = [{"containerID": c, "ifname": i} for c, i in sorted(keep)]
            for plugin in conflist.plugins:
                conf = self.plugin_config(conflist, plugin, None, None)
                conf["cni.dev/valid-attachments"] = attachments
                conf["cni.dev/attachments"] = attachments
                self._exec(str(plugin["type"]), "GC", conf, None)
        return removed

    # -- the result cache -----------------------------------------------------------------

    def _cache_path(self, network: str, container_id: str, ifname: str) -> Path:
        return self.cache_dir / "results" / f"{network}-{container_id}-{ifname}"

    def _write_cache(
        self, conflist: NetworkConfigList, rt: RuntimeConf, result: Mapping[str, Any]
    ) -> None:
        path = self._cache_path(conflist.name, rt.container_id, rt.ifname)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        doc = {
            "kind": CACHE_KIND,
            "containerId": rt.container_id,
            "config": base64.b64encode(conflist.raw).decode(),
            "ifName": rt.ifname,
            "networkName": conflist.name,
            "netns": rt.netns,
            "cniArgs": [list(pair) for pair in rt.args],
            "capabilityArgs": dict(rt.capability_args),
            "result": dict(result),
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, path)

    def _read_cache(self, path: Path) -> CachedAttachment | None:
        try:
            doc = json.loads(path.read_text())
            if doc.get("kind") != CACHE_KIND:
                return None
            config = NetworkConfigList.from_bytes(base64.b64decode(doc["config"]), str(path))
            return CachedAttachment(
                path=path,
                container_id=str(doc["containerId"]),
                network_name=str(doc["networkName"]),
                ifname=str(doc["ifName"]),
                config=config,
                netns=str(doc.get("netns", "")),
                args=tuple((str(k), str(v)) for k, v in doc.get("cniArgs") or []),
                capability_args=dict(doc.get("capabilityArgs") or {}),
                result=dict(doc.get("result") or {}),
            )
        except (OSError, ValueError, KeyError, TypeError, InvalidNetworkInput):
            return None

    def cached(self, network: str, container_id: str, ifname: str) -> CachedAttachment | None:
        """The cached ADD of one attachment, or None."""
        return self._read_cache(self._cache_path(network, container_id, ifname))

    def cached_attachments(self) -> Iterator[CachedAttachment]:
        """Every readable cache entry (unreadable ones are skipped, never deleted here)."""
        directory = self.cache_dir / "results"
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return
        for name in names:
            if name.endswith(".tmp"):
                continue
            entry = self._read_cache(directory / name)
            if entry is not None:
                yield entry


def _plugin_error(kind: str, command: str, rc: int, out: bytes, err: bytes) -> CNIError:
    """Parse the spec's error object (code, msg, details) from a failed plugin's stdout."""
    try:
        doc = json.loads(out) if out else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "msg" in doc:
        code = doc.get("code")
        return CNIError(
            kind,
            command,
            int(code) if isinstance(code, int) else 0,
            str(doc.get("msg", "")),
            str(doc.get("details", "") or ""),
        )
    text = (err or out).decode(errors="replace").strip()[:500]
    return CNIError(kind, command, 0, f"exit status {rc}: {text or 'no output'}")
