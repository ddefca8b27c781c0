"""/diagnostics publishing shared by every node (one DiagnosticArray per call, stamped now)."""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.publisher import Publisher


def publish_diagnostics(node: Node, publisher: Publisher, *statuses: DiagnosticStatus) -> None:
    """Publish ``statuses`` as one diagnostic_msgs/DiagnosticArray stamped with the node's clock."""
    arr = DiagnosticArray()
    arr.header.stamp = node.get_clock().now().to_msg()
    arr.status.extend(statuses)
    publisher.publish(arr)
