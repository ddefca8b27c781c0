"""The logic moved out of the nodes into the core (no ROS): the guard's input rules (LiveGuard), the arm
commands, the simulated arm's drive, the Slicer plan messages, and parameters built from dataclasses."""
from __future__ import annotations

import math

import numpy as np
import pytest

from spine_nav.guard import GuardConfig, GuardConfigError, GuardState
from spine_nav.guard.live import LiveGuard
from spine_nav.plan import Plan, PlanError, Screw

SCREW = Screw(id="L4_left", level="L4", side="left", entry_mm=(0, 0, 0), target_mm=(0, 0, 40), diameter_mm=6.5,
              length_mm=45)
Q_ID = (0.0, 0.0, 0.0, 1.0)


def test_live_guard_rejects_a_sample_in_another_frame_and_counts_it():
    g = LiveGuard(GuardConfig())
    v = g.sample("Tracker", Q_ID, (0.0, 0.0, 5.0), 1.0, 1.0)
    assert v.state == GuardState.TRACKING_LOST and "frame 'Tracker'" in v.reason and g.samples == 1


def test_live_guard_health_counts_only_its_tools_and_reports_a_new_loss_once():
    g = LiveGuard(GuardConfig(), health_tools=("stylus", "reference"))
    assert g.health("arm_marker", True, "missing", 1.0) is None and not g.guard.lost_tools
    v = g.health("reference", True, "reference array moved", 1.0)
    assert v.state == GuardState.TRACKING_LOST and "reference array moved" in v.reason
    assert g.health("reference", True, "reference array moved", 1.1) is None  # already lost: no second report
    assert g.health("stylus", False, "", 1.2) is None and "reference" in g.guard.lost_tools  # OK of one tool
    g.health("reference", False, "", 1.3)
    assert not g.guard.lost_tools


def test_live_guard_plan_frame_requested_screw_and_all_or_nothing_changes():
    g = LiveGuard(GuardConfig(), requested_screw="L5_left")
    with pytest.raises(PlanError, match="expected 'Reference'"):
        g.set_plan(Plan(screws=(SCREW,), frame="Reference"), {}, frame="")  # the message's frame counts
    assert g.guard.plan is None and "plan rejected" in g.guard.no_plan_reason
    warning = g.set_plan(Plan(screws=(SCREW,), frame="Reference"), {})
    assert "L5_left" in warning and g.guard.plan is not None
    before = g.guard.config
    with pytest.raises(KeyError):
        g.apply({"warn_lateral_mm": 0.5}, "nope")  # unknown screw: the threshold does not change either
    assert g.guard.config == before
    with pytest.raises(GuardConfigError):
        g.apply({"warn_lateral_mm": 5.0})  # above the violation threshold
    assert g.apply({"warn_lateral_mm": 0.5}, "L4_left").warn_lateral_mm == 0.5
    assert g.snapshot().active_id == "L4_left" and g.requested_screw == "L4_left"


def test_arm_commands_refuse_with_the_reason():
    from spine_nav.arm.commands import execute

    assert execute(None, "align", "L4_left", None, {}, 0.0) == (False, "no joint_states from the arm yet")

    class Guide:  # the commands only call these
        def release(self):
            return True, "released"

    plan = Plan(screws=(SCREW,), frame="Reference")
    assert execute(Guide(), "align", "L4_left", None, {}, 0.0) == (False, "no plan on plan/registered yet")
    assert execute(Guide(), "align", "L4_left", plan, {"L4_left": "gate"}, 0.0)[1] == "screw L4_left: not navigable (gate)"
    assert execute(Guide(), " Release ", "", plan, {}, 0.0) == (True, "released")
    ok, msg = execute(Guide(), "jump", "", plan, {}, 0.0)
    assert not ok and msg == "command: unknown 'jump' (align, hold, release, resume)"


def test_drive_holds_where_the_arm_is_when_commands_stop():
    from spine_nav.sim.arm import MujocoArm
    from spine_nav.sim.drive import StreamedPositionDrive

    sim = MujocoArm()
    _, q0, _ = sim.state()
    drive = StreamedPositionDrive(sim, command_timeout_s=0.05, max_steps=20, t0_s=0.0)
    target = q0 + 0.05
    for k in range(1, 40):  # 4 ms commands for 156 ms: the arm moves towards the target
        drive.command(target, holding=False, now_s=k * 0.004)
        assert not drive.tick(k * 0.004 + 0.001)
    moved = sim.state()[1]
    assert np.all(np.abs(moved - q0) > 1e-3)
    assert drive.tick(0.3)  # 144 ms without a command > 50 ms: the watchdog drops it
    assert drive.hold_events[-1] == (0.3, "watchdog")
    drive.command(target, holding=True, now_s=0.31)
    assert drive.hold_events[-1] == (0.31, "command")


def test_slicer_plan_messages_name_entry_and_target_per_screw():
    from spine_nav.tracking import codec
    from spine_nav.tracking.slicer_output import plan_messages

    data = plan_messages(Plan(screws=(SCREW,), frame="Reference"), {}, 1.0)
    header = codec.parse_header(data)
    assert header.type == "POINT" and header.device == "PlanPoints"
    assert plan_messages(Plan(screws=(), frame="Reference"), {}, 1.0) == b""


def test_parameters_build_the_core_config_with_none_for_off():
    from spine_nav.arm.controller import ArmGuideConfig
    from spine_nav.nodes.node_params import ARM_GUIDE_CONFIG_FIELDS
    from spine_nav.nodes.param_spec import build, param_specs

    values = {s.name: s.default for s in param_specs(ArmGuideConfig, ARM_GUIDE_CONFIG_FIELDS)}
    assert values["guard_timeout_ms"] == 50.0  # the node's default (the pure core's is None: not watched)
    assert build(ArmGuideConfig, values, ARM_GUIDE_CONFIG_FIELDS).guard_timeout_ms == 50.0
    values["guard_timeout_ms"] = 0.0  # ROS 0 = off
    cfg = build(ArmGuideConfig, values, ARM_GUIDE_CONFIG_FIELDS, control_period_s=0.002)
    assert cfg.guard_timeout_ms is None and cfg.control_period_s == 0.002 and math.isclose(cfg.feedback_timeout_s, 0.05)
