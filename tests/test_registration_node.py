"""The `registration` node over real rclpy/DDS: service round trip, registered plan (transient-local),
per-level results, /diagnostics, and a refused level reported as not navigable."""
from __future__ import annotations

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor

from tests.helpers import wait_until
from tests.registration_fixtures import TEST_SEEDS, screw_tre_mm, small_cases  # noqa: F401

pytestmark = pytest.mark.ros


def test_config_yaml_gate_matches_code_defaults():
    from pathlib import Path

    import yaml

    from spine_nav.registration import GateThresholds

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "nodes.yaml").read_text())
    assert GateThresholds.from_mapping(cfg["registration"]["ros__parameters"]["gate"]) == GateThresholds()


def test_register_service_round_trip(small_cases, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from spine_nav_interfaces.msg import LevelRegistration, ScrewPlan
    from spine_nav_interfaces.srv import Register

    from spine_nav.imaging.volume_io import load_volume, save_volume
    from spine_nav.nodes.conversions import msg_to_plan, transform_to_matrix_mm
    from spine_nav.nodes.qos import PLAN_QOS
    from spine_nav.nodes.registration import LEVELS_QOS
    from spine_nav.nodes.runner import ComposedStack
    from spine_nav.plan import load_plan

    case = small_cases[TEST_SEEDS[0]]
    plan = load_plan(case.plan)
    # second request: L3's labels removed -> L3 cannot be registered and must come back not navigable
    labels = load_volume(case.preop_labels)
    lab = np.asarray(labels.data).copy()
    lab[lab == 2] = 0
    save_volume(type(labels)(lab, labels.affine_lps, labels.frame), tmp_path / "labels_no_l3.nii.gz")

    with ComposedStack(["registration"]):
        ctx = rclpy.context.Context()
        rclpy.init(context=ctx)
        try:
            node = rclpy.create_node("test_registration_client", context=ctx)
            ex = SingleThreadedExecutor(context=ctx)
            ex.add_node(node)
            client = node.create_client(Register, "registration/register")
            diags: list[DiagnosticArray] = []
            node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
            spin = lambda: ex.spin_once(timeout_sec=0.02)  # noqa: E731
            assert wait_until(client.service_is_ready, 20.0, spin=spin)

            def call(**kw):
                req = Register.Request(preop_path=str(case.preop_ct), labels_path=str(case.preop_labels),
                                       cbct_path=str(case.cbct), plan_path=str(case.plan))
                for k, v in kw.items():
                    setattr(req, k, v)
                fut = client.call_async(req)
                assert wait_until(fut.done, 240.0, spin=spin)
                return fut.result()

            out = tmp_path / "result.json"
            resp = call(output_path=str(out))
            assert resp.success, resp.message
            assert out.exists()
            assert [lv.level for lv in resp.levels] == ["L2", "L3"] and all(lv.accepted for lv in resp.levels)
            for lv in resp.levels:
                T = transform_to_matrix_mm(lv.preop_to_cbct)  # metres on the wire, mm here
                assert screw_tre_mm(plan, lv.level, T, case.T_cbct_preop[lv.level]).max() < 0.5
            reg_plan, not_nav = msg_to_plan(resp.registered_plan)
            assert resp.registered_plan.header.frame_id == "Reference" and not not_nav and len(reg_plan) == 4

            # a late subscriber still gets the registered plan and the level results (transient-local)
            got_plan: list[ScrewPlan] = []
            got_levels: list[LevelRegistration] = []
            node.create_subscription(ScrewPlan, "plan/registered", got_plan.append, PLAN_QOS)
            node.create_subscription(LevelRegistration, "registration/levels", got_levels.append, LEVELS_QOS)
            assert wait_until(lambda: got_plan and len(got_levels) >= 2, 15.0, spin=spin)
            assert got_plan[0].screws[0].entry.x == pytest.approx(resp.registered_plan.screws[0].entry.x)
            assert wait_until(lambda: any(s.name.endswith("/L2") for d in diags for s in d.status), 10.0, spin=spin)

            # a failed level: reported in the response, not navigable in the plan, ERROR on /diagnostics
            diags.clear()
            resp2 = call(labels_path=str(tmp_path / "labels_no_l3.nii.gz"))
            assert not resp2.success and "L3" in resp2.message
            by = {lv.level: lv for lv in resp2.levels}
            assert by["L2"].accepted and not by["L3"].accepted and by["L3"].reason
            assert by["L3"].preop_to_cbct.translation.x == 0.0 and by["L3"].preop_to_cbct.rotation.w == 1.0
            nav = {s.id: (s.navigable, s.status_reason) for s in resp2.registered_plan.screws}
            assert nav["L2_left"] == (True, "") and nav["L3_left"][0] is False and "L3" in nav["L3_left"][1]
            assert wait_until(lambda: any(s.name.endswith("/L3") and s.level == s.ERROR
                                          for d in diags for s in d.status), 10.0, spin=spin)

            # bad input: refused with the reason, the node keeps serving
            resp3 = call(cbct_path=str(tmp_path / "missing.nii.gz"))
            assert not resp3.success and "missing.nii.gz" in resp3.message
            resp4 = call(output_path=str(out))
            assert not resp4.success and "already exists" in resp4.message
            ex.shutdown()
            node.destroy_node()
        finally:
            rclpy.shutdown(context=ctx)
