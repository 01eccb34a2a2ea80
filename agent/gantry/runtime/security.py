"""The container process's privileges: capabilities, user switch, no_new_privs, seccomp.

Planning is pure and happens in the runtime before anything is forked
(:func:`plan_capabilities`, :func:`seccomp_goes_early`); applying happens in the container
init, in a fixed order the kernel imposes:

1. drop the bounding set while CAP_SETPCAP is still effective (PR_CAPBSET_DROP needs it);
2. switch groups and user with PR_SET_KEEPCAPS, so the permitted set survives a setuid
   away from root (the effective set does not, by design);
3. capset(2) effective/permitted/inheritable, then raise the ambient set, which the
   kernel only accepts for capabilities already permitted and inheritable.

For a root process the set it really gets is decided at execve: permitted becomes
``bounding | inheritable | ambient``, so the bounding set is what limits root.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from gantry.linux import caps, prctl
from gantry.runtime.spec import CAPABILITIES, Capabilities
from gantry.runtime.users import ExecUser

__all__ = [
    "CAP_SYS_ADMIN",
    "CapabilityPlan",
    "apply_capabilities",
    "drop_bounding_set",
    "plan_capabilities",
    "seccomp_goes_early",
    "switch_user",
]

CAP_SYS_ADMIN: Final = CAPABILITIES["CAP_SYS_ADMIN"]


@dataclass(frozen=True)
class CapabilityPlan:
    """The five capability sets of the container process, as capability numbers."""

    bounding: frozenset[int] = frozenset()
    effective: frozenset[int] = frozenset()
    permitted: frozenset[int] = frozenset()
    inheritable: frozenset[int] = frozenset()
    ambient: frozenset[int] = frozenset()

    def mask(self, which: str) -> int:
        """The bit mask of set ``which`` (as in /proc/<pid>/status ``CapEff`` and friends)."""
        return caps.to_mask(getattr(self, which))


_SETS: Final = ("bounding", "effective", "permitted", "inheritable", "ambient")


def plan_capabilities(
    spec_caps: Capabilities | None, *, last_cap: int, held: Iterable[int]
) -> tuple[CapabilityPlan, tuple[str, ...]]:
    """Turn ``process.capabilities`` into numbers for this kernel and this runtime.

    ``last_cap`` is the kernel's highest capability, ``held`` the runtime's own bounding
    set. A capability newer than the kernel is left out with a warning (as runc does); one
    the kernel has but the runtime does not hold cannot be granted and raises
    ``ValueError`` naming it. No ``capabilities`` object means no capabilities at all:
    the safe reading of an absent field.

    Returns the plan and the warnings.
    """
    if spec_caps is None:
        return CapabilityPlan(), ()
    held_set = frozenset(held)
    warnings: list[str] = []
    sets: dict[str, frozenset[int]] = {}
    missing: set[str] = set()
    for which in _SETS:
        numbers = set()
        for name in getattr(spec_caps, which):
            number = CAPABILITIES[name]
            if number > last_cap:
                warning = f"process.capabilities: {name} is unknown to this kernel; left out"
                if warning not in warnings:
                    warnings.append(warning)
                continue
            if number not in held_set:
                missing.add(name)
                continue
            numbers.add(number)
        sets[which] = frozenset(numbers)
    if missing:
        raise ValueError(
            "process.capabilities asks for capabilities the runtime does not hold itself: "
            + ", ".join(sorted(missing))
        )
    allowed_ambient = sets["permitted"] & sets["inheritable"]
    if not sets["ambient"] <= allowed_ambient:
        # The kernel refuses to raise an ambient capability that is not both permitted and
        # inheritable; runc ignores that refusal, and `runc spec` itself asks for ambient
        # capabilities with an empty inheritable set. Leave them out, and say so.
        extra = _names(sets["ambient"] - allowed_ambient)
        warnings.append(
            f"process.capabilities.ambient: {extra} not both permitted and inheritable; "
            "left out (the kernel refuses them, runc ignores them)"
        )
        sets["ambient"] = sets["ambient"] & allowed_ambient
    plan = CapabilityPlan(**sets)
    if not plan.effective <= plan.permitted:
        extra = _names(plan.effective - plan.permitted)
        raise ValueError(f"process.capabilities.effective has {extra}, which are not permitted")
    if not plan.inheritable <= plan.bounding:
        # capset(2) refuses an inheritable capability outside the bounding set.
        extra = _names(plan.inheritable - plan.bounding)
        raise ValueError(f"process.capabilities.inheritable has {extra}, not in the bounding set")
    return plan, tuple(warnings)


def _names(numbers: Iterable[int]) -> str:
    return ", ".join(caps.cap_name(number) for number in sorted(numbers))


def seccomp_goes_early(*, no_new_privs: bool, plan: CapabilityPlan) -> bool:
    """Whether the seccomp filter must be loaded before the capabilities are dropped.

    The kernel accepts a filter only from a thread with no_new_privs or with CAP_SYS_ADMIN
    in its user namespace. Without no_new_privs and without CAP_SYS_ADMIN in the final
    effective set, the last moment the init can load it is before dropping capabilities;
    the filter then also governs the rest of the init (setgroups, setresuid, capset, the
    wait for start, execve), which the profile must allow. runc makes the same choice.
    """
    return not no_new_privs and CAP_SYS_ADMIN not in plan.effective


def drop_bounding_set(plan: CapabilityPlan, *, last_cap: int) -> None:
    """Drop every capability outside ``plan.bounding`` from the bounding set (needs
    CAP_SETPCAP, so this comes before anything lowers the effective set).

    ``last_cap`` comes from the runtime: the container's /proc may be masked or absent.
    """
    caps.limit_bounding(plan.bounding, last_cap)


def switch_user(user: ExecUser, *, set_groups: bool) -> None:
    """Become ``user``: supplementary groups, then gid, then uid, keeping the permitted
    capabilities across the switch (PR_SET_KEEPCAPS, cleared again afterwards).

    With ``set_groups`` false (a user namespace whose ``setgroups`` is ``deny``), the
    supplementary groups cannot be changed: asking for some is an error.
    """
    prctl.set_keepcaps(True)
    if set_groups:
        os.setgroups(list(user.supplementary_gids))
    elif user.supplementary_gids:
        raise PermissionError(
            "supplementary groups cannot be set: setgroups is denied in this user namespace"
        )
    # gid before uid: after setresuid away from root, CAP_SETGID is no longer effective.
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    prctl.set_keepcaps(False)


def apply_capabilities(plan: CapabilityPlan) -> None:
    """Set effective, permitted and inheritable to the plan, then the ambient set."""
    caps.capset(caps.CapSets(plan.effective, plan.permitted, plan.inheritable))
    caps.set_ambient(plan.ambient)
