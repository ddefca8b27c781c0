"""Node `command_source`: the console's command panel as the arm guide's registered command source.

A console that commands the arm (align, resume, hold) is a safety-relevant input of the arm guide: when
it goes silent mid-drilling (its process dead, its cable pulled) nobody can press hold any more, so the
arm guide holds with cause "console silent" (:mod:`spine_nav.arm.liveness`). This node

- publishes its ``source_name`` on ``arm/command_source`` (std_msgs/String, reliable) every
  ``heartbeat_period_ms`` (20 ms; the arm guide's ``command_source_timeout_ms`` is 50 ms, so two may be
  lost). The first heartbeat registers the source with the arm guide; from then on its silence holds
  the arm while it is aligning/tracking. On a clean shutdown it publishes "" (withdrawn: no longer
  watched), so stopping a console on purpose does not hold the arm, losing it does.
- relays ``relay_service`` (ArmCommand, default ``console/arm_command``) to ``arm/command``: the
  console's buttons reach the arm through this process, so a cut console cannot command the arm either.

Runs next to ``console_bridge`` in the console's process (``spine-nav up --nodes console_bridge
command_source``, as ``spine-nav demo --hosts`` does). A headless stack without it is never held for
the missing console.
"""
from __future__ import annotations

import threading

from rclpy.node import Node
from spine_nav_interfaces.srv import ArmCommand
from std_msgs.msg import String

from spine_nav.nodes.qos import STATUS_QOS

COMMAND_SOURCE_TOPIC = "arm/command_source"
RELAY_TIMEOUT_S = 10.0


class CommandSourceNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("command_source", **kwargs)
        from spine_nav.nodes.parameters import declare_node_parameters
        from spine_nav.nodes.runner import InnerNode

        p = declare_node_parameters(self)  # spine_nav.nodes.node_params.CommandSourceParams
        self.source_name = str(p["source_name"]).strip()
        period_ms = float(p["heartbeat_period_ms"])
        relay = str(p["relay_service"])
        if not self.source_name:
            raise ValueError("command_source: source_name must not be empty (it names the console in stop causes)")
        if not period_ms > 0:
            raise ValueError(f"command_source: heartbeat_period_ms must be > 0, got {period_ms}")
        self.pub = self.create_publisher(String, COMMAND_SOURCE_TOPIC, STATUS_QOS)
        self.create_timer(period_ms * 1e-3, self.beat)
        # the relay waits for the arm guide's answer: its client lives on an inner node with its own thread
        self._inner = InnerNode("command_source_client", self.context)
        self.arm_cli = self._inner.node.create_client(ArmCommand, "arm/command")
        if relay:
            self.create_service(ArmCommand, relay, self.on_relay)
        self.beat()
        self.get_logger().info(f"command source {self.source_name!r}: heartbeat every {period_ms:g} ms on "
                               f"{COMMAND_SOURCE_TOPIC}; {relay or '(no relay)'} -> arm/command")

    def beat(self) -> None:
        self.pub.publish(String(data=self.source_name))

    def on_relay(self, req: ArmCommand.Request, res: ArmCommand.Response) -> ArmCommand.Response:
        if not self.arm_cli.service_is_ready():
            res.success, res.message = False, "arm/command not available"
            return res
        done = threading.Event()
        fut = self.arm_cli.call_async(ArmCommand.Request(command=req.command, screw_id=req.screw_id))
        fut.add_done_callback(lambda _f: done.set())
        if not done.wait(RELAY_TIMEOUT_S):
            res.success, res.message = False, f"arm/command: no answer within {RELAY_TIMEOUT_S:g} s"
            return res
        out = fut.result()
        res.success, res.message = out.success, out.message
        return res

    def destroy_node(self) -> None:
        try:  # withdraw: a console stopped on purpose is no longer watched
            self.pub.publish(String(data=""))
        except Exception:  # noqa: BLE001 - shutting down; the context may already be gone
            pass
        self._inner.destroy()
        super().destroy_node()


def main(argv=None) -> int:
    from spine_nav.nodes.runner import run_node_main

    return run_node_main(CommandSourceNode, argv)
