"""The spec a container was created from, kept in its state directory.

``create`` saves the validated spec as ``<root>/<id>/config.json`` (the JSON the model
understood, :meth:`Spec.to_dict`), so that later verbs act on what the container was
made with, not on a bundle that may have changed since: ``exec`` takes the container's
capabilities, seccomp profile, rlimits and user from it, ``start`` and ``delete`` its
poststart and poststop hooks (runc keeps its config in its state.json for the same
reasons).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Final

from gantry.runtime import state as st
from gantry.runtime.spec import Spec, SpecError, load_spec

__all__ = ["SPEC_FILE", "load_saved_spec", "save_spec"]

SPEC_FILE: Final = "config.json"

# Warnings about ignored sections were given at create; reloading must not repeat them.
_QUIET: Final = logging.Logger("gantry.runtime.saved.quiet")
_QUIET.disabled = True


def save_spec(directory: Path, spec: Spec) -> None:
    """Write ``spec`` into the container's state directory, atomically."""
    st.write_atomic(directory / SPEC_FILE, json.dumps(spec.to_dict(), indent=1) + "\n", 0o600)


def load_saved_spec(directory: Path) -> Spec | None:
    """The spec saved at create; ``None`` for a container created without one (by an
    older runtime). :class:`StateError` when the file is unreadable or invalid."""
    path = directory / SPEC_FILE
    try:
        return load_spec(path, log=_QUIET)
    except FileNotFoundError:
        return None
    except (OSError, SpecError) as exc:
        raise st.StateError(f"cannot read {path}: {exc}") from None
