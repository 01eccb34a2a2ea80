"""Resource limits on the real kernel: busybox containers through gantry-runtime (cgroup v1
controllers of this hybrid host), and the real cgroup2 mount's core files plus a BPF
device program loaded for real on /sys/fs/cgroup/unified.

Assertions are on the cgroups' own counters (OOM kills, pids, throttled periods, CPU time
per period), never on how long the test took. Every container id and cgroup name carries
a uuid; nothing of Gantry's is left behind (``no_leftovers``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rootfs_support as rs
from gantry.runtime.cgroups import detect, open_cgroup
from gantry.runtime.cgroups.v2 import V2Cgroup
from gantry.runtime.defaults import default_config
from gantry.runtime.spec import load_resources

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]

RUNTIME = Path(sys.executable).parent / "gantry-runtime"
APPLETS = ("sleep", "dd", "mknod", "grep")
MiB = 1 << 20
WAIT = 30.0


@pytest.fixture(autouse=True)
def _clean(no_leftovers: None) -> Iterator[None]:
    yield


class Runtime:
    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "root"
        self.tmp = tmp_path
        self.ids: list[str] = []

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(RUNTIME), "--root", str(self.root), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, result
        return result.stdout

    def start(self, script: str, resources: dict[str, Any]) -> str:
        """Create and start ``sh -c script`` with ``linux.resources`` merged in."""
        container_id = f"gantry-res-{uuid.uuid4().hex[:10]}"
        bundle = self.tmp / container_id
        bundle.mkdir()
        rootfs = rs.make_bundle(bundle)
        for applet in APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
        config = default_config(["/bin/sh", "-c", script], "rootfs")
        config["linux"]["resources"].update(resources)
        (bundle / "config.json").write_text(json.dumps(config))
        # The container's stdout and stderr go to files (a pipe would stay open with it).
        with (bundle / "out").open("wb") as out, (bundle / "err").open("wb") as err:
            created = subprocess.run(
                [str(RUNTIME), "--root", str(self.root), "create", "-b", str(bundle), container_id],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                timeout=60,
                check=False,
            )
        assert created.returncode == 0, (bundle / "err").read_text()
        self.ids.append(container_id)
        self.ok("start", container_id)
        return container_id

    def output(self, container_id: str) -> str:
        return (self.tmp / container_id / "out").read_text()

    def stats(self, container_id: str) -> dict[str, Any]:
        event = json.loads(self.ok("events", "--stats", container_id))
        assert (event["type"], event["id"]) == ("stats", container_id)
        data: dict[str, Any] = event["data"]
        return data

    def cgroup_dir(self, container_id: str, controller: str) -> Path:
        recorded = json.loads((self.root / container_id / "state.json").read_text())
        return open_cgroup(recorded["cgroup"]).paths()[controller]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(tmp_path)
    yield rt
    for container_id in rt.ids:
        rt("delete", "--force", container_id)
    assert not any((rt.root / c).exists() for c in rt.ids)


def wait_for(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


# --- the limits, each shown by the kernel's own counters ----------------------------------------


def test_a_container_over_its_memory_limit_is_oom_killed_and_counted(runtime: Runtime) -> None:
    # memory+swap equal to memory: the 64 MiB buffer cannot go to swap either.
    cid = runtime.start(
        "dd if=/dev/zero of=/dev/null bs=64M count=1; echo dd-status=$?; exec sleep 1000",
        {"memory": {"limit": 32 * MiB, "swap": 32 * MiB}},
    )
    wait_for(lambda: "dd-status" in runtime.output(cid), "dd ending")
    assert "dd-status=137" in runtime.output(cid)  # SIGKILL, from the OOM killer
    memory = runtime.stats(cid)["memory"]
    assert memory["oom_kill"] >= 1
    assert memory["usage"]["limit"] == 32 * MiB
    assert memory["usage"]["max"] <= 32 * MiB
    assert 0 <= memory["working_set"] <= memory["usage"]["usage"]
    assert (runtime.cgroup_dir(cid, "memory") / "memory.memsw.limit_in_bytes").read_text() == (
        f"{32 * MiB}\n"
    )


def test_a_fork_bomb_stays_at_the_pids_limit(runtime: Runtime) -> None:
    # The bomb is a subshell: busybox sh gives up at the first refused fork, and its
    # children stay with the container's init.
    cid = runtime.start(
        "(while :; do sleep 1000 & done) 2>/dev/null; echo bombed; exec sleep 1000",
        {"pids": {"limit": 32}},
    )
    wait_for(lambda: "bombed" in runtime.output(cid), "the bomb hitting the limit")
    directory = runtime.cgroup_dir(cid, "pids")
    # At the limit the bomb's subshell gave up and exited: 32 less that one stay.
    assert runtime.stats(cid)["pids"] == {"current": 31, "limit": 32}
    assert (directory / "pids.peak").read_text() == "32\n"  # 32 at most, never above
    events = (directory / "pids.events").read_text().split()
    assert events[0] == "max" and int(events[1]) >= 1  # a fork was refused


def test_a_busy_loop_under_a_20_percent_quota_is_throttled_to_about_20_percent(
    runtime: Runtime,
) -> None:
    cid = runtime.start("while :; do :; done", {"cpu": {"quota": 20000, "period": 100000}})
    cpu_dir = runtime.cgroup_dir(cid, "cpu")
    assert (cpu_dir / "cpu.cfs_quota_us").read_text() == "20000\n"
    first = runtime.stats(cid)["cpu"]
    later = wait_for(
        lambda: (
            (s := runtime.stats(cid)["cpu"])["throttling"]["periods"]
            >= first["throttling"]["periods"] + 20
            and s
        ),
        "20 CFS periods",
    )
    periods = later["throttling"]["periods"] - first["throttling"]["periods"]
    throttled = later["throttling"]["throttled_periods"] - first["throttling"]["throttled_periods"]
    used = later["usage"]["total"] - first["usage"]["total"]
    share = used / (periods * 100_000_000)  # CPU time per period of 100 ms, in ns
    assert throttled >= periods // 2
    assert 0.1 < share < 0.3, share


def test_cpuset_pins_the_container_to_the_chosen_cpu(runtime: Runtime) -> None:
    if os.cpu_count() is None or (os.cpu_count() or 0) < 2:
        pytest.skip("needs two CPUs")
    cid = runtime.start(
        "grep Cpus_allowed_list /proc/self/status; exec sleep 1000", {"cpu": {"cpus": "1"}}
    )
    line = wait_for(lambda: runtime.output(cid).strip(), "the status line")
    assert line.split() == ["Cpus_allowed_list:", "1"]
    assert (runtime.cgroup_dir(cid, "cpuset") / "cpuset.cpus").read_text() == "1\n"


def test_pause_stops_a_counter_and_resume_restarts_it(runtime: Runtime) -> None:
    cid = runtime.start("i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done", {})
    counter = runtime.tmp / cid / "rootfs" / "tmp" / "count"

    def read() -> int:
        try:
            return int(counter.read_text() or 0)
        except (OSError, ValueError):
            return 0

    start = wait_for(read, "the counter counting")
    wait_for(lambda: read() > start, "the counter moving")
    runtime.ok("pause", cid)
    frozen = read()
    for _round in range(10):
        time.sleep(0.05)
        assert read() == frozen
    assert runtime.stats(cid)["pids"]["current"] >= 1
    runtime.ok("resume", cid)
    wait_for(lambda: read() > frozen, "the counter moving again")


def test_a_device_rule_denies_mknod_and_open(runtime: Runtime) -> None:
    rules = [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "m"},
    ]
    cid = runtime.start(
        "mknod /tmp/kmsg c 1 11 && echo mknod-kmsg-ok; "
        "cat /tmp/kmsg > /dev/null 2>&1 || echo open-kmsg-denied; "
        "mknod /tmp/port c 1 4 2>/dev/null || echo mknod-port-denied; "
        "cat /dev/zero | dd bs=1 count=1 2>/dev/null | wc -c > /dev/null && echo zero-ok; "
        "echo done; exec sleep 1000",
        {"devices": rules},
    )
    wait_for(lambda: "done" in runtime.output(cid), "the script ending")
    lines = runtime.output(cid).split()
    assert lines[:3] == ["mknod-kmsg-ok", "open-kmsg-denied", "mknod-port-denied"]
    listed = (runtime.cgroup_dir(cid, "devices") / "devices.list").read_text().splitlines()
    assert "c 1:11 m" in listed and "c 1:3 rwm" in listed
    assert not any(line.startswith("a ") for line in listed)


def test_update_changes_limits_in_place_and_bad_values_change_nothing(
    runtime: Runtime, tmp_path: Path
) -> None:
    cid = runtime.start("exec sleep 1000", {"memory": {"limit": 32 * MiB}, "pids": {"limit": 32}})
    pid = json.loads(runtime.ok("state", cid))["pid"]
    memory = runtime.cgroup_dir(cid, "memory")
    pids = runtime.cgroup_dir(cid, "pids")
    cpu = runtime.cgroup_dir(cid, "cpu")
    runtime.ok("update", "--memory", "64m", "--pids-limit", "64", "--cpu-quota", "50000", cid)
    assert (memory / "memory.limit_in_bytes").read_text() == f"{64 * MiB}\n"
    assert (pids / "pids.max").read_text() == "64\n"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000\n"
    resources = tmp_path / "resources.json"
    resources.write_text(json.dumps({"memory": {"limit": 48 * MiB}, "cpu": {"shares": 512}}))
    runtime.ok("update", "-r", str(resources), cid)
    assert (memory / "memory.limit_in_bytes").read_text() == f"{48 * MiB}\n"
    assert (cpu / "cpu.shares").read_text() == "512\n"
    assert json.loads(runtime.ok("state", cid))["pid"] == pid  # the same process, in place

    refused = runtime("update", "--memory", "-5", cid)
    assert refused.returncode == 1
    assert "memory.limit (--memory)" in refused.stderr
    refused = runtime("update", "--pids-limit", "10", "--cpuset-cpus", "999", cid)
    assert refused.returncode == 1
    assert "linux.resources.cpu.cpus" in refused.stderr
    assert (pids / "pids.max").read_text() == "64\n"  # restored: nothing changed
    assert (memory / "memory.limit_in_bytes").read_text() == f"{48 * MiB}\n"


def test_a_limit_the_host_cannot_honour_fails_create_and_leaves_nothing(
    runtime: Runtime,
) -> None:
    with pytest.raises(AssertionError, match=r"network\.classID"):
        runtime.start("true", {"network": {"classID": 1048577}})
    runtime.ids.clear()
    assert not runtime.root.exists() or not list(runtime.root.iterdir())


# --- the real cgroup2 mount: core files and the BPF device program --------------------------


@pytest.fixture
def unified() -> Iterator[V2Cgroup]:
    layout = detect()
    if layout.v2_mount is None:
        pytest.skip("no cgroup2 mount")
    cgroup = V2Cgroup(layout, f"/gantry-test-{uuid.uuid4().hex[:10]}")
    cgroup.create()
    try:
        yield cgroup
    finally:
        cgroup.kill_all()
        cgroup.destroy()


def _child_in(cgroup: V2Cgroup, paths: tuple[str, ...]) -> tuple[int, int, int]:
    """Fork a child that joins ``cgroup`` (when told), opens each path, reports, sleeps."""
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(go_w)
            os.close(out_r)
            os.read(go_r, 1)
            words = []
            for path in paths:
                try:
                    os.close(os.open(path, os.O_RDONLY))
                    words.append(f"{path}=ok")
                except OSError as exc:
                    words.append(f"{path}={exc.errno}")
            os.write(out_w, " ".join(words).encode())
            os.close(out_w)
            signal.pause()
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(out_w)
    return pid, go_w, out_r


def test_v2_core_files_and_bpf_device_program_for_real(unified: V2Cgroup) -> None:
    resources = load_resources({"devices": [{"allow": False, "access": "rwm"}]})
    unified.apply(resources)
    pid, go, out = _child_in(unified, ("/dev/null", "/dev/kmsg", "/dev/zero"))
    try:
        unified.add(pid)
        assert unified.procs() == [pid]
        os.write(go, b"x")
        report = b""
        while chunk := os.read(out, 4096):
            report += chunk
        # /dev/kmsg is denied by the program (EPERM) though root opens it outside.
        assert report.decode().split() == ["/dev/null=ok", "/dev/kmsg=1", "/dev/zero=ok"]
        os.close(os.open("/dev/kmsg", os.O_RDONLY))
        unified.freeze()
        assert unified.state() == "frozen"
        assert "frozen 1" in (unified.directory / "cgroup.events").read_text()
        unified.thaw()
        assert unified.state() == "thawed"
        unified.kill_all()  # cgroup.kill
        assert os.waitpid(pid, 0)[1] & 0x7F == signal.SIGKILL
        assert "populated 0" in (unified.directory / "cgroup.events").read_text()
    finally:
        os.close(go)
        os.close(out)
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_v2_hugetlb_limit_and_stats_for_real(unified: V2Cgroup) -> None:
    if "hugetlb" not in unified.controllers:
        pytest.skip("no hugetlb on the cgroup2 side")
    unified.apply(load_resources({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MiB}]}))
    assert (unified.directory / "hugetlb.2MB.max").read_text() == f"{4 * MiB}\n"
    stats = unified.stats()
    assert stats.hugetlb["2MB"].usage == 0
    assert set(stats.hugetlb) >= {"2MB"}


def test_events_streams_stats_and_ends_with_the_container(runtime: Runtime, tmp_path: Path) -> None:
    cid = runtime.start("exec sleep 1000", {"pids": {"limit": 16}})
    stream = tmp_path / "events"
    with stream.open("wb") as out:
        events = subprocess.Popen(
            [str(RUNTIME), "--root", str(runtime.root), "events", "--interval", "50ms", cid],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: len(stream.read_text().splitlines()) >= 3, "three stats events")
            runtime.ok("kill", cid, "KILL")
            assert events.wait(timeout=WAIT) == 0  # it ends once the container has stopped
        finally:
            if events.poll() is None:
                events.kill()
                events.wait()
    lines = [json.loads(line) for line in stream.read_text().splitlines()]
    assert {(e["type"], e["id"]) for e in lines} == {("stats", cid)}
    assert lines[0]["data"]["pids"] == {"current": 1, "limit": 16}
