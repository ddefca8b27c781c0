"""Node `sim_tracker`: the simulated optical tracker as an OpenIGTLink server (see :mod:`spine_nav.sim.tracker`).

Parameters (config/nodes.yaml): port, host, rate_hz, header_version, stamp_at_send (header time = the
moment of transmission instead of the model's sample time), noise_mm, tremor_mm,
breathing_amplitude_mm, breathing_hz, seed, t0_wall_s (time.time() of sample 0; 0 = at start: a
respawned simulator given the first one's continues its timeline), tip_offset_mm (Tool frame), occlusions
(``"Device:start_s:end_s[,...]"``), tool_pose_topic, tracker_reference_xyz_mm (float[3]) +
tracker_reference_quat_xyzw (float[4]): the static ``T_tracker_reference`` (patient Reference in
the tracker, before breathing; default :func:`spine_nav.sim.tracker.default_T_tracker_reference`).

Simulation-control API (in-process callers such as the demo, tests): ``node.model`` is the
:class:`~spine_nav.sim.tracker.TrackerModel` the server samples; it is thread-safe, so
``node.model.occlude("StylusToTracker", 0.5)``, ``node.model.bump(T_delta)`` and
``node.model.T_tracker_reference_true(node.model.model_time_s(time.time()))`` may be called from any thread.

Subscribes ``tool_pose_topic`` (PoseStamped, frame Reference, metres): the true tool-tip pose the
simulated tool is held at (e.g. the demo's hand along the planned screw); until the first one the
tool is out of view (STATUS not present). Clients get TRANSFORMs per device, or TDATA after STT_TDATA.
"""
from __future__ import annotations

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node

from spine_nav.nodes.conversions import pose_to_quat_mm, quat_mm_to_matrix_mm
from spine_nav.nodes.parameters import declare_node_parameters, pose_from
from spine_nav.nodes.qos import SENSOR_QOS
from spine_nav.sim.tracker import TrackerModel, TrackerModelConfig, parse_occlusions
from spine_nav.sim.tracker_server import SimTrackerServer
from spine_nav.tracking.tools import ToolDefinition


class SimTrackerNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("sim_tracker", **kwargs)
        p = declare_node_parameters(self)
        T_tracker_reference = pose_from(p, "tracker_reference", self.get_name())
        cfg = TrackerModelConfig(
            rate_hz=float(p["rate_hz"]), noise_mm=float(p["noise_mm"]), tremor_mm=float(p["tremor_mm"]),
            breathing_amplitude_mm=float(p["breathing_amplitude_mm"]), breathing_hz=float(p["breathing_hz"]),
            seed=int(p["seed"]), T_tracker_reference=T_tracker_reference, occlusions=parse_occlusions(p["occlusions"]),
            tool=ToolDefinition(tip_offset_mm=tuple(float(x) for x in p["tip_offset_mm"])))
        self.server = SimTrackerServer(TrackerModel(cfg), port=int(p["port"]), host=p["host"],
                                       header_version=int(p["header_version"]),
                                       stamp_at_send=bool(p["stamp_at_send"]),
                                       allowed_peers=p["allowed_peers"],
                                       t0_s=float(p["t0_wall_s"]) or None).start()
        #: simulation-control API: the model the server samples (occlude / bump / true reference pose)
        self.model: TrackerModel = self.server.model
        self.create_subscription(PoseStamped, p["tool_pose_topic"], self._on_tool_pose, SENSOR_QOS)
        self.get_logger().info(f"sim_tracker: OpenIGTLink server on {p['host']}:{self.server.port}, "
                               f"{cfg.rate_hz:g} Hz, noise {cfg.noise_mm} mm RMS, breathing "
                               f"{cfg.breathing_amplitude_mm} mm @ {cfg.breathing_hz} Hz")

    def _on_tool_pose(self, msg: PoseStamped) -> None:
        try:
            self.server.model.set_tool_pose_mm(quat_mm_to_matrix_mm(*pose_to_quat_mm(msg.pose)))
        except ValueError as exc:
            self.get_logger().error(f"{msg.header.frame_id} tool pose ignored: {exc}")

    def destroy_node(self) -> None:
        self.server.close()
        super().destroy_node()


def main(argv=None) -> int:
    from spine_nav.nodes.runner import run_node_main

    return run_node_main(SimTrackerNode, argv)
