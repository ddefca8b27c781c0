"""Node `registration`: per-vertebra CBCT-to-preop registration as a ROS 2 service.

Service ``registration/register`` (spine_nav_interfaces/srv/Register): registers the files named
in the request (see :func:`spine_nav.registration.pipeline.register_case`), optionally writes
result.json (never overwriting), and answers with every level's verdict and the registered plan.
Publishes (after each run):

* ``plan/registered`` ScrewPlan in ``Reference`` (PLAN_QOS: reliable, transient-local): screws of
  accepted levels mapped by their own level's transform; screws of failed levels carry
  ``navigable=false`` and ``status_reason`` and keep their PreopCT coordinates (no accepted
  transform exists for them: never navigate them).
* ``registration/levels`` LevelRegistration, one message per level (reliable, transient-local,
  depth 32 so a late joiner gets the last run's levels).
* ``/diagnostics``: one status per level (OK accepted / ERROR failed with the reason).

Long-running work: a registration takes seconds, and this node may share an executor with the
guard and the tracker bridge (``spine-nav up``). The service therefore lives on a small inner
node (``registration_service``) spun by its OWN SingleThreadedExecutor in a dedicated thread;
a registration blocks only that thread, and everything it publishes is published from that
spinning thread (the pattern docs/platform-notes.md found safe with rclpy). Requests are served one at a
time (a second request waits for the first).

Parameters: ``method`` (small_gicp | open3d), ``num_threads``, ``bone_threshold_hu``, and every
gate threshold as ``gate.<name>`` (see spine_nav.registration.config.GateThresholds).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from spine_nav_interfaces.msg import LevelRegistration, ScrewPlan
from spine_nav_interfaces.srv import Register

from spine_nav.nodes.conversions import matrix_mm_to_transform, plan_to_msg
from spine_nav.nodes.parameters import config_from, declare_node_parameters
from spine_nav.nodes.qos import LEVELS_QOS, PLAN_QOS
from spine_nav.nodes.runner import InnerNode
from spine_nav.nodes.diagnostics import publish_diagnostics
from spine_nav.registration import GateThresholds, RegistrationConfig, RegistrationError
from spine_nav.registration.pipeline import CaseRegistration, register_case



class RegistrationNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("registration", **kwargs)
        p = declare_node_parameters(self)  # override_levels: set with `ros2 param set` (a service call) before
        # the request: levels accepted although refused by the gate, logged and marked overridden
        self.method, self.num_threads, self.bone_threshold_hu = p["method"], p["num_threads"], p["bone_threshold_hu"]
        self.gate = config_from(GateThresholds, p, "registration")
        self.config = RegistrationConfig(method=self.method, num_threads=self.num_threads,
                                         bone_threshold_hu=self.bone_threshold_hu, gate=self.gate)
        self.last_result: CaseRegistration | None = None
        # inner node + own executor thread for the long-running service (see module doc)
        self._service_node = InnerNode("registration_service", self.context)
        self._inner = self._service_node.node
        self.plan_pub = self._inner.create_publisher(ScrewPlan, "plan/registered", PLAN_QOS)
        self.levels_pub = self._inner.create_publisher(LevelRegistration, "registration/levels", LEVELS_QOS)
        self.diag_pub = self._inner.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.srv = self._inner.create_service(Register, "registration/register", self._on_register)
        self.get_logger().info(f"ready: service registration/register ({self.method}, gate {self.gate})")

    def _on_register(self, request: Register.Request, response: Register.Response) -> Register.Response:
        log = self._inner.get_logger()
        paths = {"preop": request.preop_path, "labels": request.labels_path, "cbct": request.cbct_path,
                 "plan": request.plan_path}
        missing = [f"{k}_path" for k, v in paths.items() if not v]
        if missing:
            return self._refuse(response, f"request: empty {', '.join(missing)}")
        if request.output_path and Path(request.output_path).exists():
            return self._refuse(response, f"output_path {request.output_path}: already exists; refusing to overwrite")
        log.info(f"registering {request.cbct_path} to {request.preop_path}")
        overrides = [t.strip().upper() for t in str(self.get_parameter("override_levels").value).split(",")
                     if t.strip()]
        if overrides:
            log.warning(f"OPERATOR OVERRIDE active for {', '.join(overrides)} (parameter override_levels)")
        try:
            result, inputs = register_case(request.preop_path, request.labels_path, request.cbct_path,
                                           request.plan_path, self.config, progress=log.info,
                                           override_levels=overrides)
        except RegistrationError as exc:
            return self._refuse(response, str(exc))
        self.last_result = result
        if request.output_path:
            from spine_nav.registration.result_io import save_result

            try:
                save_result(result, request.output_path, inputs=paths)
            except (OSError, FileExistsError) as exc:
                log.error(f"could not write {request.output_path}: {exc}")
        stamp_s = self.get_clock().now().nanoseconds * 1e-9
        level_msgs = [self._level_msg(lv, r) for lv, r in result.levels.items()]
        plan_msg = self._plan_msg(result, inputs["plan"], stamp_s)
        for m in level_msgs:
            self.levels_pub.publish(m)
        self.plan_pub.publish(plan_msg)
        self._publish_diag(result)
        failed = [lv for lv, r in result.levels.items() if not r.accepted]
        response.success = result.all_accepted
        response.message = ("all levels accepted" if not failed else
                            f"failed (not navigable): {', '.join(failed)}; "
                            + "; ".join(f"{lv}: {result.levels[lv].reason}" for lv in failed))
        response.levels = level_msgs
        response.registered_plan = plan_msg
        log.info(f"registration done: {response.message}")
        return response

    def _refuse(self, response: Register.Response, message: str) -> Register.Response:
        self._inner.get_logger().error(f"registration refused: {message}")
        response.success, response.message = False, message
        status = DiagnosticStatus(name="spine_nav/registration", level=DiagnosticStatus.ERROR, message=message)
        self._publish_statuses([status])
        return response

    @staticmethod
    def _level_msg(level: str, r) -> LevelRegistration:
        q = r.quality
        m = LevelRegistration(level=level, accepted=bool(r.accepted), reason=r.reason,
                              fitness=float(np.nan_to_num(q.fitness, nan=0.0)),
                              inlier_rmse_mm=float(np.nan_to_num(q.inlier_rmse_mm, nan=-1.0, posinf=-1.0)),
                              condition_number=float(np.nan_to_num(q.condition_number, nan=-1.0, posinf=-1.0)))
        # identity unless accepted: a transform the gate refused never leaves the node
        m.preop_to_cbct = matrix_mm_to_transform(r.T_cbct_preop if r.accepted else np.eye(4))
        return m

    @staticmethod
    def _plan_msg(result: CaseRegistration, plan, stamp_s: float) -> ScrewPlan:
        from spine_nav.plan import Plan

        registered = {s.id: s for s in result.registered_plan.screws}
        screws = [registered.get(s.id, s) for s in plan.screws]  # failed ones keep PreopCT coords, flagged
        full = Plan(screws=tuple(screws), frame="Reference", case_id=plan.case_id)
        return plan_to_msg(full, stamp_s, not_navigable=result.not_navigable)

    def _publish_diag(self, result: CaseRegistration) -> None:
        statuses = []
        for lv, r in result.levels.items():
            st = DiagnosticStatus(name=f"spine_nav/registration/{lv}",
                                  level=DiagnosticStatus.OK if r.accepted else DiagnosticStatus.ERROR,
                                  message=r.reason)
            st.values = [KeyValue(key=k, value=str(v)) for k, v in r.quality.as_dict().items()]
            statuses.append(st)
        self._publish_statuses(statuses)

    def _publish_statuses(self, statuses: list[DiagnosticStatus]) -> None:
        publish_diagnostics(self, self.diag_pub, *statuses)

    def destroy_node(self) -> None:
        self._service_node.destroy()
        super().destroy_node()


def main(argv=None) -> int:
    from spine_nav.nodes.runner import run_node_main

    return run_node_main(RegistrationNode, argv)
