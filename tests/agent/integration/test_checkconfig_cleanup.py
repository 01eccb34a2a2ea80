"""The probes leave nothing behind and never touch the caller, whatever happens to them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from gantry import kernel_check as kc

pytestmark = pytest.mark.root


def caller_state() -> dict[str, str]:
    """The namespaces, seccomp mode and no_new_privs of this very process."""
    state = {name: os.readlink(f"/proc/self/ns/{name}") for name in os.listdir("/proc/self/ns")}
    status = Path("/proc/self/status").read_text()
    for field in ("Seccomp", "NoNewPrivs"):
        match = re.search(rf"^{field}:\s*(\d+)", status, re.M)
        assert match
        state[field] = match.group(1)
    state["cwd"] = os.getcwd()
    return state


def test_cli_probes_leave_no_mount_cgroup_or_temp_dir(
    no_leftovers: None, gantry_bin: Path, tmp_path: Path
) -> None:
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    result = subprocess.run(
        [str(gantry_bin), "checkconfig", "--json", "--feature", "all"],
        check=False,
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert result.returncode in (0, 1), result.stderr
    assert b'"probe:overlay"' in result.stdout
    assert list(scratch.iterdir()) == []  # the overlay probe's scratch directory is gone


def test_in_process_probes_leave_the_caller_untouched(no_leftovers: None) -> None:
    before = caller_state()
    for _round in range(3):
        report = kc.run_checks(features=[name for name, _description, _default in kc.FEATURES])
        probes = [item for item in report["items"] if item["kind"] == "probe"]
        assert probes and {item["status"] for item in probes} == {"ok"}
    assert caller_state() == before


def test_a_probe_that_hangs_is_killed_and_reaped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kc, "_PROBE_TIMEOUT", 0.5)

    def hang() -> tuple[bool | None, str]:
        time.sleep(30)
        return True, "never"

    results = kc._run_probes([("slow", hang, kc._nothing)])
    # Left alone, the probe would answer "never" after 30 s: "timed out" means it was cut off.
    assert results["slow"][0] is None and "timed out" in results["slow"][1]
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # no child left to reap


def test_probe_outcomes_and_clean_up_after_a_crash(tmp_path: Path) -> None:
    leftover = tmp_path / "gantry-probe-crashed"

    def crash() -> tuple[bool | None, str]:
        leftover.mkdir()
        os._exit(9)  # dies before it could remove what it made

    def refuse() -> tuple[bool | None, str]:
        return False, "the kernel said no"

    def explode() -> tuple[bool | None, str]:
        raise RuntimeError("surprise")

    results = kc._run_probes(
        [
            ("crash", crash, kc._remove_dir(str(leftover))),
            ("refuse", refuse, kc._nothing),
            ("explode", explode, kc._nothing),
        ]
    )
    assert not leftover.exists()
    assert results["crash"][0] is None
    assert results["refuse"] == (False, "the kernel said no")
    assert results["explode"][0] is None and "surprise" in results["explode"][1]


def test_unprivileged_probes_are_unknown_not_missing(tmp_path: Path) -> None:
    """As nobody the kernel refuses most probes: that says nothing about the kernel."""
    engine = Path(kc.__file__).resolve()
    python = "/usr/bin/python3"  # the venv's interpreter lives under /root, closed to nobody
    if not os.access(python, os.X_OK):
        pytest.skip(f"{python} is needed to run the engine as an unprivileged user")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c"]
    readable = subprocess.run(
        [*as_nobody, f"open({str(engine)!r}).close()"], check=False, capture_output=True
    )
    if readable.returncode != 0:
        pytest.skip(f"{engine} is not readable by nobody in this checkout")
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import _kernel_check as k; "
        "print(json.dumps(k.run_checks(environ={})))"
    )
    result = subprocess.run(
        [*as_nobody, script, str(engine.parent)],
        check=False,
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    items = {item["id"]: item for item in report["items"]}
    assert items["probe:unshare:net"]["status"] == "unknown"
    assert "not permitted" in items["probe:unshare:net"]["detail"]
    assert items["probe:cgroup:v2"]["status"] == "unknown"
    assert items["probe:seccomp"]["status"] == "ok"  # no_new_privs makes it unprivileged
    assert report["summary"]["missing"] == 0
    assert report["summary"]["exit_code"] == 0
