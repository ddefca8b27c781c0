"""Operator commands to the arm guide (``arm/command``: align / hold / resume / release), no ROS.

:func:`execute` checks a command against what the guide knows (joint feedback, plan, navigability) and
calls :class:`spine_nav.arm.controller.ArmGuide`; it returns (success, message) for the service response.
"""
from __future__ import annotations

from spine_nav.arm.safety import StopCause

COMMANDS = ("align", "hold", "release", "resume")


def execute(guide, command: str, screw_id: str, plan, not_navigable: dict[str, str], now_s: float) -> tuple[bool, str]:
    """Run ``command`` (case and surrounding blanks ignored) on ``guide`` (None: no joint feedback yet) at
    controller time ``now_s``; ``plan`` (None: none yet) and ``not_navigable`` (screw id -> reason) for align."""
    if guide is None:
        return False, "no joint_states from the arm yet"
    cmd = command.strip().lower()
    if cmd == "align":
        if plan is None:
            return False, "no plan on plan/registered yet"
        if screw_id in not_navigable:
            return False, f"screw {screw_id}: not navigable ({not_navigable[screw_id]})"
        try:
            screw = plan.screw(screw_id)
        except KeyError as exc:
            return False, str(exc.args[0])
        return guide.align(screw, now_s)
    if cmd == "hold":
        guide.hold(now_s, StopCause.OPERATOR, "arm/command hold")
        return True, "hold requested"
    if cmd == "resume":
        return guide.resume(now_s)
    if cmd == "release":
        return guide.release()
    return False, f"command: unknown {command!r} ({', '.join(COMMANDS)})"
