"""OCI lifecycle hooks: run ``hooks.*`` entries at the points the runtime spec names.

Where each kind runs (runtime-spec ``config.md`` "POSIX-platform Hooks", and runc's
libcontainer, which Gantry follows where the spec leaves room):

=================  =======================================  ==================  =========
hook               when                                     namespaces / path   failure
=================  =======================================  ==================  =========
prestart           create: namespaces and mounts made,      the runtime's       fails
(deprecated)       before pivot_root (runc runs it with     (host path)         create
                   createRuntime, from the runtime side)
createRuntime      right after prestart, same point         the runtime's       fails
                                                            (host path)         create
createContainer    same point, after createRuntime, run by  the container's,    fails
                   the container's init itself              before pivot_root   create
                                                            (host path)
startContainer     start: after the start gate opened,      the container's,    fails
                   before the program's execve, as the      after pivot_root    start
                   container's user with its capabilities   (container path)
                   (runc's order)
poststart          start: once the program runs, by         the runtime's       warning
                   whoever ran ``start``
poststop           delete, once the container has stopped   the runtime's       warning
=================  =======================================  ==================  =========

Every hook gets the container's state JSON on stdin (``ociVersion``, ``id``, ``status``,
``pid``, ``bundle``, ``annotations``), exactly its ``env`` as environment (nothing
inherited), ``args`` as its argv (``[path]`` when empty), and is killed after ``timeout``
seconds when one is set. A failure message carries the exit status and what the hook
wrote to stdout and stderr, as runc's does.

This module runs inside the container's init too (createContainer, startContainer): it
imports everything it uses at the top, before the init's pivot_root.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from gantry.runtime.spec import Hook, Hooks, Spec

__all__ = [
    "HOOK_KINDS",
    "HookError",
    "HookKind",
    "environment_of",
    "hook_state",
    "hooks_of",
    "run_hooks",
    "run_hooks_warning",
    "state_status_for",
]

HookKind = Literal[
    "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"
]
HOOK_KINDS: Final[tuple[HookKind, ...]] = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)
_FIELDS: Final[Mapping[HookKind, str]] = {
    "prestart": "prestart",
    "createRuntime": "create_runtime",
    "createContainer": "create_container",
    "startContainer": "start_container",
    "poststart": "poststart",
    "poststop": "poststop",
}
_MAX_OUTPUT: Final = 2000
_log = logging.getLogger(__name__)


class HookError(Exception):
    """Hook ``hooks.<kind>[index]`` failed; the message says how."""

    def __init__(self, kind: str, index: int, message: str) -> None:
        super().__init__(kind, index, message)
        self.kind = kind
        self.index = index
        self.message = message

    def __str__(self) -> str:
        return f"hooks.{self.kind}[{self.index}]: {self.message}"


def hooks_of(hooks: Hooks | None, kind: HookKind) -> tuple[Hook, ...]:
    """The hooks of ``kind`` in ``hooks`` (none when the spec has no ``hooks``)."""
    if hooks is None:
        return ()
    found: tuple[Hook, ...] = getattr(hooks, _FIELDS[kind])
    return found


def hook_state(
    spec: Spec, container_id: str, *, status: str, pid: int, bundle: str
) -> dict[str, Any]:
    """The state JSON a hook reads on stdin (runtime-spec ``runtime.md`` "State")."""
    return {
        "ociVersion": spec.oci_version,
        "id": container_id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": dict(spec.annotations),
    }


def _output(data: bytes | None) -> str:
    text = (data or b"").decode(errors="replace").strip()
    return text[-_MAX_OUTPUT:]


def _run_one(hook: Hook, kind: str, index: int, state: bytes) -> None:
    argv = list(hook.args) or [hook.path]
    env = environment_of(hook)
    try:
        child = subprocess.Popen(
            argv,
            executable=hook.path,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            cwd="/",
        )
    except OSError as exc:
        raise HookError(kind, index, f"{hook.path}: {exc.strerror or exc}") from None
    try:
        out, err = child.communicate(state, timeout=hook.timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise HookError(
            kind, index, f"{hook.path} ran past its timeout of {hook.timeout}s and was killed"
        ) from None
    if child.returncode != 0:
        code = child.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        raise HookError(
            kind,
            index,
            f"{hook.path} failed ({how}); stdout: {_output(out)!r}, stderr: {_output(err)!r}",
        )


def run_hooks(hooks: Sequence[Hook], kind: HookKind, state: Mapping[str, Any]) -> None:
    """Run ``hooks`` in order with ``state`` on stdin; the first failure raises
    :class:`HookError` and the rest do not run (a failing create or start hook)."""
    if not hooks:
        return
    data = _encode(state)
    for index, hook in enumerate(hooks):
        _run_one(hook, kind, index, data)


def run_hooks_warning(
    hooks: Sequence[Hook],
    kind: HookKind,
    state: Mapping[str, Any],
    log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> list[str]:
    """Run every hook of ``hooks`` (poststart, poststop): a failure is logged as a
    warning and the next hook runs, as the spec asks. Returns the warnings."""
    warnings: list[str] = []
    if not hooks:
        return warnings
    data = _encode(state)
    for index, hook in enumerate(hooks):
        try:
            _run_one(hook, kind, index, data)
        except HookError as exc:
            warnings.append(str(exc))
            (log or _log).warning("%s", exc)
    return warnings


def _encode(state: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(state)).encode()


def state_status_for(kind: HookKind) -> str:
    """The status the state JSON shows to a hook of ``kind``."""
    return {
        "prestart": "creating",
        "createRuntime": "creating",
        "createContainer": "creating",
        "startContainer": "created",
        "poststart": "running",
        "poststop": "stopped",
    }[kind]


def environment_of(hook: Hook) -> dict[str, str]:
    """The environment ``hook`` runs with: its ``env`` entries, nothing inherited."""
    return {key: value for key, _sep, value in (item.partition("=") for item in hook.env)}
