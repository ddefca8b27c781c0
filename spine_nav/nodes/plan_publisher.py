"""Node `plan_publisher`: loads a plan file and publishes it (reliable, transient-local).

Parameters:
    plan_path (str): plan.json (spine_nav schema) or a 3D Slicer .mrk.json; empty: publish nothing.
    topic (str): default ``plan/preop``.

A plan that fails validation is reported on /diagnostics and the log with the
file and field; nothing is published (a wrong plan is worse than none).
"""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from spine_nav_interfaces.msg import ScrewPlan

from spine_nav.nodes.conversions import plan_to_msg
from spine_nav.nodes.parameters import declare_node_parameters
from spine_nav.nodes.qos import PLAN_QOS
from spine_nav.nodes.diagnostics import publish_diagnostics
from spine_nav.plan import PlanError, load_plan


class PlanPublisherNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("plan_publisher", **kwargs)
        p = declare_node_parameters(self)
        self.plan_path, topic = p["plan_path"], p["topic"]
        self.pub = self.create_publisher(ScrewPlan, topic, PLAN_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.plan = None
        if self.plan_path:
            self.load_and_publish(self.plan_path)

    def load_and_publish(self, path: str) -> bool:
        """Load ``path`` and publish it; on error log and publish an ERROR diagnostic. Returns success."""
        status = DiagnosticStatus(name="spine_nav/plan_publisher", hardware_id=path)
        try:
            self.plan = load_plan(path)
        except PlanError as exc:
            self.get_logger().error(f"plan rejected: {exc}")
            status.level, status.message = DiagnosticStatus.ERROR, str(exc)
            self._publish_diag(status)
            return False
        self.pub.publish(plan_to_msg(self.plan, self.get_clock().now().nanoseconds * 1e-9))
        self.get_logger().info(f"published plan {path}: {len(self.plan)} screws ({', '.join(self.plan.ids)})")
        status.level, status.message = DiagnosticStatus.OK, f"{len(self.plan)} screws"
        self._publish_diag(status)
        return True

    def _publish_diag(self, status: DiagnosticStatus) -> None:
        publish_diagnostics(self, self.diag_pub, status)


def main(argv=None) -> int:
    from spine_nav.nodes.runner import run_node_main

    return run_node_main(PlanPublisherNode, argv)
