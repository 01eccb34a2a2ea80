"""OCI hooks through gantry-runtime on the real kernel: shell-script hooks that write
marker files show the order they ran in, the namespaces they ran in, the state JSON they
read, their args and env; a failing create or start hook fails that verb and leaves
nothing; failing poststart and poststop hooks only warn; a hook past its timeout is
killed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import linux_support as support
import pytest
import rootfs_support as rs
import runtime_cli_support as rcs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]

# Each hook appends "KIND ARG1 $K mnt-namespace" to the log and keeps its stdin.
HOOK_SCRIPT = """#!/bin/sh
dir=$(dirname "$0")
[ -d /hooklog ] && [ ! -e "$dir/log" ] && dir=/hooklog
echo "$1 $2 $K $(readlink /proc/self/ns/mnt)" >> "$dir/log"
cat > "$dir/$1.json"
"""


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    with support.host_unchanged():
        yield


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[rcs.Runtime]:
    with rcs.runtime_in(tmp_path) as rt:
        yield rt


def _write_script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def _hook(path: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"path": path, "args": [Path(path).name, kind, "arg2"], "env": ["K=v"], **extra}


def test_hooks_run_in_order_in_their_namespaces_with_the_state(
    runtime: rcs.Runtime, tmp_path: Path
) -> None:
    logdir = tmp_path / "hooklog"
    logdir.mkdir()
    host_hook = _write_script(logdir / "hook.sh", HOOK_SCRIPT)

    def hooks(config: dict[str, Any]) -> None:
        config["hooks"] = {
            kind: [_hook(host_hook, kind)]
            for kind in ("prestart", "createRuntime", "createContainer", "poststart", "poststop")
        }
        # startContainer runs after pivot_root: its path is the container's.
        config["hooks"]["startContainer"] = [_hook("/hook.sh", "startContainer")]
        config["mounts"].append(
            {"destination": "/hooklog", "type": "bind", "source": str(logdir), "options": ["rbind"]}
        )

    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/sleep", "300"], hooks)
    _write_script(bundle / "rootfs" / "hook.sh", HOOK_SCRIPT)
    runtime.ok("create", "-b", str(bundle), "h1")
    pid = int(runtime.state("h1")["pid"])
    container_mnt = os.readlink(f"/proc/{pid}/ns/mnt")
    host_mnt = os.readlink("/proc/self/ns/mnt")
    runtime.ok("start", "h1")
    runtime.ok("delete", "--force", "h1")

    entries = [line.split() for line in (logdir / "log").read_text().splitlines()]
    assert [entry[0] for entry in entries] == [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ]
    assert all(entry[1:3] == ["arg2", "v"] for entry in entries), entries  # args, env
    namespaces = {entry[0]: entry[3] for entry in entries}
    for kind in ("prestart", "createRuntime", "poststart", "poststop"):
        assert namespaces[kind] == host_mnt, kind
    for kind in ("createContainer", "startContainer"):
        assert namespaces[kind] == container_mnt, kind
    statuses = {}
    for kind in namespaces:
        state = json.loads((logdir / f"{kind}.json").read_text())
        assert (state["id"], state["pid"], state["bundle"]) == ("h1", pid, str(bundle)), kind
        statuses[kind] = state["status"]
    assert statuses == {
        "prestart": "creating",
        "createRuntime": "creating",
        "createContainer": "creating",
        "startContainer": "created",
        "poststart": "running",
        "poststop": "stopped",
    }


def _failing(tmp_path: Path, name: str = "fail.sh") -> str:
    return _write_script(tmp_path / name, "#!/bin/sh\necho out-text\necho err-text >&2\nexit 3\n")


def test_a_failing_create_runtime_hook_fails_create_and_leaves_nothing(
    runtime: rcs.Runtime, tmp_path: Path
) -> None:
    fail = _failing(tmp_path)

    def hooks(config: dict[str, Any]) -> None:
        config["hooks"] = {"createRuntime": [{"path": "/bin/true"}, {"path": fail}]}

    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/true"], hooks)
    result = runtime("create", "-b", str(bundle), "f1")
    assert result.rc == 1, result
    assert "hooks.createRuntime[1]" in result.err and "exit status 3" in result.err, result
    assert "err-text" in result.err and "Traceback" not in result.err
    assert not (runtime.root / "f1").exists()
    assert list(Path("/sys/fs/cgroup/pids").glob("gantry/f1")) == []


def test_a_failing_create_container_hook_fails_create(runtime: rcs.Runtime, tmp_path: Path) -> None:
    fail = _failing(tmp_path)

    def hooks(config: dict[str, Any]) -> None:
        config["hooks"] = {"createContainer": [{"path": fail}]}

    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/true"], hooks)
    result = runtime("create", "-b", str(bundle), "f2")
    assert result.rc == 1, result
    assert "step hooks" in result.err and "hooks.createContainer[0]" in result.err, result
    assert not (runtime.root / "f2").exists()


def test_a_failing_start_container_hook_fails_start(runtime: rcs.Runtime, tmp_path: Path) -> None:
    def hooks(config: dict[str, Any]) -> None:
        config["hooks"] = {"startContainer": [{"path": "/fail.sh"}]}

    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/sleep", "300"], hooks)
    _write_script(bundle / "rootfs" / "fail.sh", "#!/bin/sh\necho no-start >&2\nexit 4\n")
    runtime.ok("create", "-b", str(bundle), "f3")
    result = runtime("start", "f3")
    assert result.rc == 1, result
    assert "hooks.startContainer[0]" in result.err and "no-start" in result.err, result
    assert runtime.exit_record("f3")["exit_code"] != 0  # the program never ran
    assert runtime.state("f3")["status"] == "stopped"
    runtime.ok("delete", "f3")


def test_failing_poststart_and_poststop_hooks_only_warn(
    runtime: rcs.Runtime, tmp_path: Path
) -> None:
    fail = _failing(tmp_path)
    marker = tmp_path / "second-ran"
    second = _write_script(tmp_path / "second.sh", f"#!/bin/sh\ntouch {marker}\n")

    def hooks(config: dict[str, Any]) -> None:
        config["hooks"] = {
            "poststart": [{"path": fail}, {"path": second}],
            "poststop": [{"path": fail}],
        }

    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/sleep", "300"], hooks)
    runtime.ok("create", "-b", str(bundle), "w1")
    started = runtime("start", "w1")
    assert started.rc == 0, started
    assert "hooks.poststart[0]" in started.err and "exit status 3" in started.err
    assert marker.exists()  # the next hook still ran
    assert runtime.state("w1")["status"] == "running"
    deleted = runtime("delete", "--force", "w1")
    assert deleted.rc == 0, deleted
    assert "hooks.poststop[0]" in deleted.err
    assert not (runtime.root / "w1").exists()


def test_a_hook_past_its_timeout_is_killed(runtime: rcs.Runtime, tmp_path: Path) -> None:
    slow = _write_script(tmp_path / "slow.sh", "#!/bin/sh\nexec sleep 300\n")

    def hooks(config: dict[str, Any]) -> None:
        config["hooks"] = {"prestart": [{"path": slow, "timeout": 1}]}

    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/true"], hooks)
    result = runtime("create", "-b", str(bundle), "t1")
    assert result.rc == 1, result
    assert "hooks.prestart[0]" in result.err and "timeout of 1s" in result.err, result
    assert not (runtime.root / "t1").exists()


def test_poststart_runs_once_the_program_runs(runtime: rcs.Runtime, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    hook = _write_script(
        tmp_path / "poststart.sh",
        "#!/bin/sh\n"
        "pid=$(sed -n 's/.*\"pid\": \\([0-9]*\\).*/\\1/p')\n"
        f"tr '\\0' ' ' < /proc/$pid/cmdline > {seen}\n",
    )

    def hooks(config: dict[str, Any]) -> None:
        config["hooks"] = {"poststart": [{"path": hook}]}

    bundle = rcs.busybox_bundle(tmp_path / "bundle", ["/bin/sleep", "300"], hooks)
    runtime.ok("create", "-b", str(bundle), "ps1")
    runtime.ok("start", "ps1")
    try:
        # When start returned, the init had exec'd the program (the spec's "after the
        # user-specified process is executed"), and the hook saw it.
        assert seen.read_text().split() == ["/bin/sleep", "300"]
    finally:
        runtime.ok("delete", "--force", "ps1")
