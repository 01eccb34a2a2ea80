"""Images through the ``gantry`` CLI against a real agent (issue 5's acceptance flow): an
umoci-built image with whiteouts loaded and run, a loopback docker-registry pulled from,
committed to and pushed to, docker-save archives and rootfs tarballs, PUT's pull policy,
and bad input answered 4xx naming the field."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import registry_support
import rootfs_support as rs
from agent_support import GANTRY, Agent, running_agent
from gantry.images.service import ImageService
from gantry.linux import mount as mnt

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
    pytest.mark.skipif(shutil.which("umoci") is None, reason="needs umoci (make setup)"),
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo (make setup)"),
]

APPLETS = ("sh", "cat", "ls", "echo", "test", "touch", "rm", "mkdir", "sleep", "id", "env")
CHECK = "test ! -e /etc/doomed && echo doomed-gone; cat /etc/kept; ls /opt/replaced; hostname"


def _run(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120, **kwargs)


def gantry(agent: Agent, *argv: str) -> subprocess.CompletedProcess[str]:
    verb = 2 if argv[0] == "image" else 1  # the connection flags go right after the verb
    return subprocess.run(
        [str(GANTRY), *argv[:verb], "--url", f"unix://{agent.socket}", *argv[verb:]],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def ok(agent: Agent, *argv: str) -> str:
    done = gantry(agent, *argv)
    assert done.returncode == 0, (argv, done.stdout, done.stderr)
    return done.stdout


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    yield


def _unmount_snapshots(root: Path) -> None:
    """Unmount what a test's agent left mounted (only when the test failed half-way)."""
    base = root / "images" / "containers"
    for entry in base.iterdir() if base.is_dir() else []:
        with contextlib.suppress(OSError):
            mnt.umount2(str(entry / "rootfs"), mnt.MNT_DETACH)


@pytest.fixture
def agent() -> Iterator[Agent]:
    with running_agent() as (the_agent, _rootfs):
        try:
            yield the_agent
        finally:
            with contextlib.suppress(Exception):
                the_agent.remove_all()
            _unmount_snapshots(the_agent.root)


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """An OCI layout built by umoci: ``base`` is busybox with /etc/doomed and
    /opt/replaced/{a,b}; ``v2`` adds a layer deleting /etc/doomed (a whiteout) and
    replacing /opt/replaced by a directory holding only ``c`` (opaque), with Cmd, Env
    and a user ``app`` in its config."""
    layout = tmp_path / "layout"
    _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", f"{layout}:base")
    bundle = tmp_path / "bundle-base"
    _run("umoci", "unpack", "--image", f"{layout}:base", str(bundle))
    rootfs = bundle / "rootfs"
    for sub in ("bin", "etc", "opt/replaced", "proc", "sys", "dev", "tmp"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy2(rs.BUSYBOX, rootfs / "bin/busybox")
    for applet in (*APPLETS, "hostname"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/:/bin/sh\napp:x:1234:4321::/:/bin/sh\n")
    (rootfs / "etc/group").write_text("root:x:0:\napp:x:4321:\n")
    (rootfs / "etc/doomed").write_text("doomed\n")
    (rootfs / "etc/kept").write_text("kept\n")
    (rootfs / "opt/replaced/a").write_text("a\n")
    (rootfs / "opt/replaced/b").write_text("b\n")
    _run("umoci", "repack", "--image", f"{layout}:base", str(bundle))
    _run("umoci", "config", "--image", f"{layout}:base", "--config.cmd", "/bin/sh")
    bundle2 = tmp_path / "bundle-v2"
    _run("umoci", "unpack", "--image", f"{layout}:base", str(bundle2))
    rootfs2 = bundle2 / "rootfs"
    (rootfs2 / "etc/doomed").unlink()
    shutil.rmtree(rootfs2 / "opt/replaced")
    (rootfs2 / "opt/replaced").mkdir()
    (rootfs2 / "opt/replaced/c").write_text("c\n")
    _run("umoci", "repack", "--image", f"{layout}:v2", str(bundle2))
    _run(
        "umoci", "config", "--image", f"{layout}:v2",
        "--config.cmd", "/bin/sh", "--config.cmd", "-c", "--config.cmd", CHECK,
        "--config.env", "PATH=/bin", "--config.env", "FROM_IMAGE=yes",
        "--config.workingdir", "/opt",
    )  # fmt: skip
    for path in (bundle, bundle2):
        shutil.rmtree(path)
    return layout


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A docker-registry on 127.0.0.1:PORT with its own storage, stopped after."""
    if shutil.which("docker-registry") is None:
        pytest.skip("needs docker-registry (make setup)")
    with registry_support.docker_registry(tmp_path / "registry") as running:
        yield running.host


def _layout_tar(layout: Path, target: Path) -> Path:
    with tarfile.open(target, "w") as tar:
        tar.add(layout, arcname=".")
    return target


def _copy_to_registry(layout: Path, tag: str, destination: str) -> None:
    _run(
        "skopeo",
        "copy",
        "--dest-tls-verify=false",
        f"oci:{layout}:{tag}",
        f"docker://{destination}",
    )


def _tar_names(path: Path) -> set[str]:
    with tarfile.open(path) as tar:
        return {name.removeprefix("./") for name in tar.getnames()}


# --- the acceptance flow -----------------------------------------------------------------


def test_umoci_image_loads_runs_and_round_trips_a_loopback_registry(
    agent: Agent, layout: Path, registry: str, tmp_path: Path
) -> None:
    archive = _layout_tar(layout, tmp_path / "layout.tar")
    out = ok(agent, "load", "-i", str(archive), "--reference", "local/busybox:v2")
    assert "Loaded image" in out
    listed = json.loads(ok(agent, "images", "--json"))
    assert any("local/busybox:v2" in image["tags"] for image in listed)
    # The image's Cmd runs; the whiteout hid /etc/doomed, the opaque dir hid a and b.
    done = gantry(agent, "run", "--name", "loaded", "--pull", "never", "local/busybox:v2")
    assert (done.returncode, done.stdout) == (0, "doomed-gone\nkept\nc\nloaded\n"), done.stderr
    inspect = agent.req("GET", "/v1/containers/loaded")
    image = agent.req("GET", "/v1/images/local/busybox:v2")
    assert inspect["image_id"] == image["id"] and image["containers"] == ["loaded"]
    assert inspect["spec"]["env"]["FROM_IMAGE"] == "yes" and inspect["spec"]["workdir"] == "/opt"
    assert "FROM_IMAGE=yes" in image["config"]["Env"]
    assert [layer["size"] > 0 for layer in image["layers"]] == [True, True]

    # The same image through the registry: pulled, run, changed, committed, pushed.
    _copy_to_registry(layout, "v2", f"{registry}/test/busybox:v2")
    pulled = ok(agent, "pull", f"{registry}/test/busybox:v2")
    assert "pulled" in pulled
    assert "up to date" in ok(agent, "pull", f"{registry}/test/busybox:v2")
    done = gantry(
        agent, "run", "--name", "changer", "-u", "app", f"{registry}/test/busybox:v2",
        "sh", "-c", f"{CHECK}; id -u; echo changed > /tmp/new",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "doomed-gone\nkept\nc\nchanger\n1234\n"
    image_id = ok(
        agent, "commit", "-m", "a change", "-a", "tester", "changer", f"{registry}/test/committed:1"
    ).strip()
    committed = agent.req("GET", f"/v1/images/{registry}/test/committed:1")
    assert committed["id"] == image_id and len(committed["layers"]) == 3
    assert committed["config"]["Cmd"][:2] == ["sh", "-c"]
    ok(agent, "push", f"{registry}/test/committed:1")
    inspected = json.loads(
        _run(
            "skopeo", "inspect", "--tls-verify=false", f"docker://{registry}/test/committed:1"
        ).stdout
    )
    assert inspected["Digest"] == committed["digest"]
    assert len(inspected["Layers"]) == 3
    # Removed here and pulled back (run pulls what is missing): the change is in it.
    ok(agent, "rm", "changer")
    assert "Deleted" in ok(agent, "rmi", f"{registry}/test/committed:1")
    assert gantry(agent, "image", "inspect", f"{registry}/test/committed:1").returncode != 0
    done = gantry(agent, "run", "--rm", f"{registry}/test/committed:1", "cat", "/tmp/new")
    assert (done.returncode, done.stdout) == (0, "changed\n"), done.stderr


def test_docker_archives_and_rootfs_tarballs_load_import_and_run(
    agent: Agent, layout: Path, tmp_path: Path
) -> None:
    docker_archive = tmp_path / "docker.tar"
    _run("skopeo", "copy", f"oci:{layout}:v2", f"docker-archive:{docker_archive}:saved/busybox:v2")
    assert "Loaded image: saved/busybox:v2" in ok(agent, "load", "-i", str(docker_archive))
    done = gantry(agent, "run", "--rm", "--name", "fromsave", "saved/busybox:v2")
    assert (done.returncode, done.stdout) == (0, "doomed-gone\nkept\nc\nfromsave\n"), done.stderr

    # gantry save (docker and OCI formats) of what it holds, read back by skopeo and gantry.
    saved = tmp_path / "saved.tar"
    ok(agent, "save", "-o", str(saved), "saved/busybox:v2")
    assert "manifest.json" in _tar_names(saved)
    oci = tmp_path / "saved-oci.tar"
    ok(agent, "save", "--format", "oci", "-o", str(oci), "saved/busybox:v2")
    assert {"index.json", "oci-layout"} <= _tar_names(oci)
    _run("skopeo", "inspect", f"docker-archive:{saved}")
    ok(agent, "rmi", "saved/busybox:v2")
    ok(agent, "load", "-i", str(saved))
    done = gantry(agent, "run", "--rm", "saved/busybox:v2")
    assert done.returncode == 0 and done.stdout.startswith("doomed-gone\n"), done.stderr

    # A rootfs tarball: imported with no config, run with a command; exported again.
    plain = tmp_path / "plain"
    for sub in ("bin", "etc", "proc", "sys", "dev", "tmp"):
        (plain / sub).mkdir(parents=True)
    shutil.copy2(rs.BUSYBOX, plain / "bin/busybox")
    for applet in APPLETS:
        (plain / "bin" / applet).symlink_to("busybox")
    (plain / "etc/motd").write_text("from a tarball\n")
    tarball = tmp_path / "rootfs.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(plain, arcname=".")
    image_id = ok(agent, "import", str(tarball), "plain:1").strip()
    assert agent.req("GET", "/v1/images/plain:1")["id"] == image_id
    refused = gantry(agent, "run", "plain:1")
    assert refused.returncode == 125 and "spec.command" in refused.stderr
    done = gantry(agent, "run", "--name", "plain", "plain:1", "sh", "-c", "cat /etc/motd; touch /x")
    assert (done.returncode, done.stdout) == (0, "from a tarball\n"), done.stderr
    exported = tmp_path / "export.tar"
    ok(agent, "export", "-o", str(exported), "plain")
    names = _tar_names(exported)
    assert {"etc/motd", "x", "bin/busybox"} <= names
    ok(agent, "rm", "plain")
    # Prune -a removes what no container uses; an image a container uses stays.
    ok(agent, "create", "--name", "keeper", "plain:1", "true")
    ok(agent, "tag", "plain:1", "other:2")
    ok(agent, "image", "prune", "-a")
    left = json.loads(ok(agent, "images", "--json"))
    assert [image["id"] for image in left] == [image_id]
    assert sorted(left[0]["tags"]) == ["other:2", "plain:1"]


def test_put_pull_policies_recreate_on_a_changed_tag(
    agent: Agent, layout: Path, registry: str
) -> None:
    reference = f"{registry}/test/app:1"
    _copy_to_registry(layout, "base", reference)
    spec = {"image": reference, "command": ["sleep", "300"], "env": {"PATH": "/usr/bin:/bin"}}
    body = {"spec": spec, "state": "running", "pull": "always"}
    # A long verb as an operation: 202 at once, its result the synchronous answer.
    operation = agent.req(
        "POST", "/v1/images/pull", query={"async": True}, body={"reference": reference}
    )
    assert operation["status"] in ("running", "success")
    waited = agent.req("GET", f"/v1/operations/{operation['id']}/wait", query={"timeout": 120})
    assert waited["status"] == "success", waited
    assert waited["result"]["changed"] is True and waited["result"]["image"]["tags"] == [reference]
    first = agent.req("PUT", "/v1/containers/app", body=body)
    assert first["actions"] == ["create", "start"]  # pulled already: always found no change
    container = first["container"]
    assert container["state"]["running"] and container["spec"]["env"]["PATH"] == "/usr/bin:/bin"
    assert agent.req("PUT", "/v1/containers/app", body=body)["changed"] is False
    # The tag moves to another image: always pulls it and recreates the container.
    _copy_to_registry(layout, "v2", reference)
    dry = agent.req("PUT", "/v1/containers/app", body={**body, "pull": "missing", "dry_run": True})
    assert dry["changed"] is False  # missing: the local image is still the old one
    moved = agent.req("PUT", "/v1/containers/app", body=body)
    assert moved["actions"] == ["pull", "recreate", "start"]
    assert "image_id" in moved["diff"]["fields"]
    assert moved["container"]["image_id"] != container["image_id"]
    assert moved["container"]["spec"]["env"]["FROM_IMAGE"] == "yes"
    assert moved["container"]["state"]["running"]
    assert (
        agent.req("PUT", "/v1/containers/app", body={**body, "pull": "missing"})["changed"] is False
    )
    # In use: no removal (409 naming the container), force only untags; prune keeps it.
    error = agent.error("DELETE", f"/v1/images/{reference}")
    assert (error.status, error.field) == (409, "ref") and "app" in error.detail
    pruned = agent.req("POST", "/v1/images/prune", body={"all": True})
    assert pruned["deleted"] and all(d.startswith("sha256:") for d in pruned["deleted"])
    assert moved["container"]["image_id"] not in pruned["deleted"]
    image = agent.req("GET", f"/v1/images/{moved['container']['image_id']}")
    assert image["containers"] == ["app"]
    forced = agent.req("DELETE", f"/v1/images/{reference}", query={"force": True})
    assert forced["untagged"] == [reference] and forced["deleted"] == []
    never = agent.error("PUT", "/v1/containers/app", body={**body, "pull": "never"})
    assert (never.status, never.field) == (422, "spec.image")


def test_a_crashed_create_leaves_no_snapshot_and_a_stopped_container_mounts_again(
    agent: Agent, layout: Path, tmp_path: Path
) -> None:
    ok(agent, "load", "-i", str(_layout_tar(layout, tmp_path / "l.tar")), "--reference", "l")
    ok(agent, "create", "--name", "later", "l:v2")
    container = agent.req("GET", "/v1/containers/later")
    rootfs = Path(container["paths"]["rootfs"])
    assert os.path.ismount(rootfs)
    agent.stop()
    # As after a crash between snapshot and row, and a reboot that unmounted everything.
    service = ImageService(agent.root / "images")
    orphan = service.prepare_rootfs("orphan-of-a-crash", service.resolve("l:v2"))
    assert os.path.ismount(orphan.rootfs)
    mnt.umount2(str(rootfs), mnt.MNT_DETACH)
    agent.start()
    assert not orphan.base.exists()
    assert not os.path.ismount(rootfs)
    # And a pull or commit that crashed before naming its manifest: blobs nothing uses.
    stray = service.store.put_bytes(b"half of a crashed pull")
    assert service.store.has_blob(stray)
    agent.stop()
    agent.start()
    assert not service.store.has_blob(stray)
    assert agent.req("GET", "/v1/images/l:v2")["tags"] == ["l:v2"]
    ok(agent, "start", "later")
    assert agent.req("POST", "/v1/containers/later/wait", body={})["exit_code"] == 0
    logs = b"".join(agent.client.stream("GET", "/v1/containers/later/logs"))
    assert logs == b"doomed-gone\nkept\nc\nlater\n"
    ok(agent, "rm", "later")
    assert not rootfs.exists()
    assert list((agent.root / "images" / "containers").iterdir()) == []


# --- bad input -------------------------------------------------------------------------------


def _put(pull: str = "missing", **spec: Any) -> dict[str, Any]:
    return {"json": {"spec": {"image": "l:v2", **spec}, "pull": pull}}


BAD = [
    ("POST", "/v1/images/pull", {"json": {}}, 422, "reference"),
    ("POST", "/v1/images/pull", {"json": {"reference": 5}}, 422, "reference"),
    ("POST", "/v1/images/pull", {"json": {"reference": "a", "surprise": 1}}, 422, "surprise"),
    ("POST", "/v1/images/pull", {"json": {"reference": "Bad Name"}}, 422, "reference"),
    ("POST", "/v1/images/pull", {"json": {"reference": "a", "platform": "x"}}, 422, "platform"),
    ("POST", "/v1/images/push", {"json": {"reference": "nothere:1"}}, 404, "reference"),
    ("GET", "/v1/images/nothere:1", {}, 404, "ref"),
    ("DELETE", "/v1/images/nothere:1", {}, 404, "ref"),
    ("POST", "/v1/images/tag", {"json": {"source": "nothere", "target": "x"}}, 404, "source"),
    ("POST", "/v1/images/tag", {"json": {"source": "l:v2", "target": "::"}}, 422, "target"),
    ("POST", "/v1/images/save", {"json": {"references": []}}, 422, "references"),
    ("POST", "/v1/images/save", {"json": {"references": ["l:v2"], "format": "zip"}}, 422, "format"),
    ("POST", "/v1/images/save", {"json": {"references": ["nothere"]}}, 404, "references[0]"),
    ("POST", "/v1/images/import", {"raw": b"x" * 600}, 422, "query.reference"),
    ("POST", "/v1/images/import", {"raw": b"x" * 600, "query": {"reference": "i:1"}}, 422, "body"),
    ("POST", "/v1/images/load", {"raw": b"not a tar at all" * 64}, 422, "body"),
    ("POST", "/v1/images/load", {"raw": b""}, 422, "body"),
    ("POST", "/v1/images/prune", {"json": {"all": "yes"}}, 422, "all"),
    ("POST", "/v1/containers/nothere/commit", {"json": {}}, 404, "name"),
    ("POST", "/v1/containers/rootfsbox/commit", {"json": {}}, 409, "name"),
    ("POST", "/v1/containers/rootfsbox/commit", {"json": {"reference": "a@b"}}, 422, "reference"),
    ("GET", "/v1/containers/nothere/export", {}, 404, "name"),
    ("PUT", "/v1/containers/x", _put(rootfs="/"), 422, "spec.image"),
    ("PUT", "/v1/containers/x", _put(user="nobody"), 422, "spec.user"),
    ("PUT", "/v1/containers/x", _put(entrypoint="sh"), 422, "spec.entrypoint"),
    ("PUT", "/v1/containers/x", _put(workdir="rel"), 422, "spec.workdir"),
    ("PUT", "/v1/containers/x", _put(image="nothere:1", pull="never"), 422, "spec.image"),
    ("PUT", "/v1/containers/x", _put(pull="often"), 422, "pull"),
]  # fmt: skip


def test_bad_input_is_4xx_naming_the_field_and_changes_nothing(
    agent: Agent, layout: Path, tmp_path: Path
) -> None:
    ok(agent, "load", "-i", str(_layout_tar(layout, tmp_path / "l.tar")), "--reference", "l")
    rootfs = agent.scratch / "bundle" / "rootfs"
    agent.put("rootfsbox", {"rootfs": str(rootfs), "command": ["true"]}, state="present")
    images_before = agent.req("GET", "/v1/images")
    containers_before = [row["name"] for row in agent.req("GET", "/v1/containers")]
    for method, path, kwargs, status, field in BAD:
        args: dict[str, Any] = {}
        if "json" in kwargs:
            args["body"] = kwargs["json"]
        if "raw" in kwargs:
            args["raw"] = kwargs["raw"]
        if "query" in kwargs:
            args["query"] = kwargs["query"]
        error = agent.error(method, path, **args)
        assert (error.status, error.field) == (status, field), (method, path, error.detail)
        if status == 404 and field != "name":
            assert error.detail.startswith("no such image: "), error.detail
        else:
            assert field.rsplit(".", maxsplit=1)[-1].split("[")[0] in error.detail, error.detail
    assert agent.req("GET", "/v1/images") == images_before
    assert [row["name"] for row in agent.req("GET", "/v1/containers")] == containers_before
    assert list((agent.root / "tmp").iterdir()) == []
    done = gantry(agent, "load", "-i", str(tmp_path / "missing.tar"))
    assert done.returncode == 125 and "missing.tar" in done.stderr
