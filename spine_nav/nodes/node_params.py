"""The parameters of every spine_nav node that the core's config dataclasses do not already hold (no rclpy).

Each node's parameters = the dataclasses listed in :data:`NODE_PARAMETERS` (core configs first, then the
node's own here), declared with descriptors by :func:`spine_nav.nodes.parameters.declare_node_parameters`.
config/nodes.yaml carries exactly these names and defaults (tests/test_parameters.py), except values marked
``site`` (per-site: calibrations, ports), which it sets for the deployment.
"""
from __future__ import annotations

from dataclasses import dataclass

from spine_nav.arm.controller import ArmGuideConfig
from spine_nav.guard.config import GuardConfig
from spine_nav.nodes.param_spec import ALL_FIELDS, param
from spine_nav.registration.config import GateThresholds, RegistrationConfig
from spine_nav.tracking.codec import DEFAULT_MAX_BODY_BYTES
from spine_nav.tracking.reference_jump import ReferenceJumpConfig

LOOPBACK = "127.0.0.0/8,::1"
PEERS = "who may connect: comma-separated addresses or networks (loopback only by default; '*' = anyone)"
POSITIVE = (1e-9, None)
PERIOD_MS = (0.1, 60_000.0)
PORT = (0, 65535)
IDENTITY_XYZ, IDENTITY_QUAT = (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class TrackerBridgeParams:
    mode: str = param("client", "client: connect to the tracker / PLUS server; server: trackers connect here")
    host: str = param("127.0.0.1", "tracker server address (client) or listen address (server)", site=True)
    port: int = param(18944, "OpenIGTLink port (PLUS default 18944)", range=PORT, site=True)
    tdata: bool = param(False, "send STT_TDATA after connecting (TDATA servers stream only then)")
    tdata_resolution_ms: int = param(0, "STT_TDATA resolution (0 = every sample)", "ms", (0, 10_000))
    reference_device: str = param("ReferenceToTracker", "PLUS name of the patient reference array")
    arm_marker_device: str = param("ArmMarkerToTracker", "PLUS name of the arm's marker")
    tool_name: str = param("stylus", "tool name (ToolHealth.tool)")
    tool_device: str = param("StylusToTracker", "PLUS name of the tool")
    tool_tip_device: str = param("StylusTipToReference", "PLUS name of a tracker-computed tip (used when sent)")
    tip_offset_mm: tuple = param((0.0, 0.0, 150.0), "tip in the Tool frame (`spine-nav calibrate pivot`)", "mm",
                                 site=True)
    shaft_direction: tuple = param((0.0, 0.0, 0.0), "shaft axis in the Tool frame (zero = along the tip offset)")
    max_skew_ms: float = param(2.0, "largest tool/reference tracker-time difference in a composition", "ms",
                               (0.0, 1000.0))
    timeout_ms: float = param(50.0, "watchdog: TRACKING_LOST after max(timeout_ms, timeout_periods x period)",
                              "ms", PERIOD_MS)
    timeout_periods: float = param(3.0, "watchdog timeout in measured sample periods", "", (1.0, 1000.0))
    health_period_ms: float = param(20.0, "watchdog judged this often; a change is published at once", "ms",
                                    PERIOD_MS)
    health_publish_period_ms: float = param(20.0, "unchanged health republished this often (the bridge's heartbeat: arm_guide bridge_timeout_ms)", "ms", PERIOD_MS)
    max_body_bytes: int = param(DEFAULT_MAX_BODY_BYTES, "largest OpenIGTLink body accepted", "bytes",
                                (1024, 1 << 30))
    allowed_peers: str = param(LOOPBACK, f"server mode: {PEERS}")
    reference_jump_check: bool = param(True, "latch reference TRACKING_LOST on a bumped reference array")


#: ReferenceJumpConfig field -> tracker_bridge parameter (the core's names say what they bound, the
#: parameters that they are about the reference array)
REFERENCE_JUMP_NAMES = {"min_jump_mm": "reference_jump_mm", "max_rotation_deg": "reference_jump_deg",
                        "noise_mm": "reference_noise_mm", "noise_deg": "reference_noise_deg",
                        "max_speed_mm_s": "reference_max_speed_mm_s"}


@dataclass(frozen=True)
class SlicerOutputParams:
    port: int = param(18945, "OpenIGTLink server for 3D Slicer (OpenIGTLinkIF); 0 = any free port", range=PORT,
                      site=True)
    host: str = param("0.0.0.0", "listen address (all interfaces; allowed_peers decides who may connect)")
    allowed_peers: str = param(LOOPBACK, PEERS)
    rate_hz: float = param(30.0, "tool pose / guard state messages at most this often (changes at once)", "Hz",
                           (0.1, 1000.0))
    tool_tip_name: str = param("StylusTipToReference", "TRANSFORM name of the tool tip (T_reference_tooltip)")
    tool_in_process: bool = param(True, "composed with tracker_bridge: tool tips without the DDS hop")


@dataclass(frozen=True)
class TrajectoryGuardParams:
    active_screw_id: str = param("", "screw to guard ('' = automatic selection)", read_only=False)
    health_tools: tuple = param(("stylus", "reference"), "tools whose ToolHealth counts ('*' = any)")
    tool_topic: str = param("tracking/tool_tip", "tool tip poses (PoseStamped, Reference)")
    tool_in_process: bool = param(True, "composed with tracker_bridge: samples and health without the DDS hop")
    latency_record_path: str = param("", "'' = none; else per-sample latency record written on stop / shutdown")
    health_topic: str = param("tracking/health", "tool health (ToolHealth)")
    plan_topic: str = param("plan/registered", "registered plan (ScrewPlan)")
    status_topic: str = param("guard/status", "verdicts (GuardStatus)")
    markers_topic: str = param("guard/markers", "RViz markers (MarkerArray)")
    watchdog_period_ms: float = param(10.0, "no-sample watchdog period", "ms", PERIOD_MS)
    heartbeat_period_ms: float = param(20.0, "guard/status at least this often, even idle", "ms", PERIOD_MS)
    markers_period_s: float = param(0.1, "marker period", "s", (1e-3, 60.0))
    diagnostics_period_s: float = param(1.0, "/diagnostics period", "s", (1e-2, 600.0))


@dataclass(frozen=True)
class ArmParams:
    """The robot and its command interface (arm_guide and sim_arm; :mod:`spine_nav.nodes.arm_params`)."""

    tracker_robotbase_xyz_mm: tuple = param(IDENTITY_XYZ, "T_tracker_robotbase translation (hand-eye: `spine-nav arm calibrate`)", "mm", site=True)
    tracker_robotbase_quat_xyzw: tuple = param(IDENTITY_QUAT, "T_tracker_robotbase rotation", site=True)
    urdf: str = param("", "URDF/xacro path or package://pkg/rel ('' = our arm, urdf/spine_arm.urdf.xacro)")
    base_link: str = param("", "base link of the chain (with urdf)")
    flange_link: str = param("", "flange link of the chain (with urdf)")
    guidetube_xyz_mm: tuple = param((0.0, 0.0, 100.0), "T_flange_guidetube translation", "mm")
    guidetube_quat_xyzw: tuple = param(IDENTITY_QUAT, "T_flange_guidetube rotation")
    armmarker_xyz_mm: tuple = param((70.0, 0.0, 20.0), "T_flange_armmarker translation", "mm")
    armmarker_quat_xyzw: tuple = param(IDENTITY_QUAT, "T_flange_armmarker rotation")
    package_paths: tuple = param(("",), "where package:// and $(find pkg) resolve")
    command_interface: str = param("spine_nav", "spine_nav | joint_trajectory | forward_position")
    controller_name: str = param("", "'' = joint_trajectory_controller / forward_position_controller")
    controller_joints: tuple = param(("",), "the controller's joints in its order ('' = the URDF chain's)")
    joint_name_map: tuple = param(("",), "'urdf_joint:controller_joint' where names differ")


@dataclass(frozen=True)
class ArmGuideParams:
    servo_rate_hz: float = param(1000.0, "servo loop rate", "Hz", (1.0, 10_000.0))
    command_rate_hz: float = param(250.0, "keep-alive joint command rate (position streaming)", "Hz", (1.0, 10_000.0))
    state_rate_hz: float = param(20.0, "arm/state rate", "Hz", (0.1, 1000.0))
    realtime: bool = param(True, "SCHED_FIFO + mlockall for the servo thread when permitted")
    latency_record_path: str = param("", "'' = none; else reference stamp -> command latency written on stop / shutdown")


#: ArmGuideConfig fields that are arm_guide parameters (the rest are tuned in the core)
ARM_GUIDE_CONFIG_FIELDS = ("standoff_mm", "reference_timeout_s", "feedback_timeout_s", "cycle_watchdog_s",
                           "guard_timeout_ms", "bridge_timeout_ms", "command_source_timeout_ms", "velocity_scale", "near_patient_mm", "near_patient_velocity_scale",
                           "marker_drift_mm")


@dataclass(frozen=True)
class SimArmParams:
    q0_rad: tuple = param((0.0, 0.4, 0.0, -1.3, 0.0, 1.0, 0.0), "start joints, chain order", "rad")
    publish_rate_hz: float = param(250.0, "physics tick / joint_states rate", "Hz", (1.0, 10_000.0))
    marker_noise_mm: float = param(0.1, "tracker noise on tracking/arm_marker (3-D RMS)", "mm", (0.0, 100.0))
    command_timeout_s: float = param(0.08, "no joint command for this long -> hold in place (arm_guide died)",
                                     "s", (1e-3, 60.0))
    max_steps_per_tick: int = param(20, "physics steps per tick at most (no catch-up burst)", "", (1, 10_000))


@dataclass(frozen=True)
class CommandSourceParams:
    source_name: str = param("console", "names the console in the arm's stop causes (must not be empty)")
    heartbeat_period_ms: float = param(20.0, "arm/command_source heartbeat period (arm_guide command_source_timeout_ms)",
                                       "ms", PERIOD_MS)
    relay_service: str = param("console/arm_command", "ArmCommand service relayed to arm/command ('' = no relay)")


@dataclass(frozen=True)
class ConsoleBridgeParams:
    host: str = param("127.0.0.1", "browser console address (another only when asked)", site=True)
    port: int = param(8080, "browser console port", "", PORT, site=True)
    case_dir: str = param("", "case folder with cbct.nii.gz (slices, bone surface)")


@dataclass(frozen=True)
class PlanPublisherParams:
    plan_path: str = param("", "plan.json (spine_nav schema) or a 3D Slicer .mrk.json; '' = publish nothing")
    topic: str = param("plan/preop", "topic the plan is published on (reliable, transient-local)")


@dataclass(frozen=True)
class RegistrationParams:
    override_levels: str = param("", "operator override, e.g. 'L5': accepted although refused by the gate, logged "
                                     "and marked overridden (set before the request)", read_only=False)


#: RegistrationConfig fields that are registration parameters
REGISTRATION_CONFIG_FIELDS = ("method", "num_threads", "bone_threshold_hu")


@dataclass(frozen=True)
class SimTrackerParams:
    port: int = param(18944, "OpenIGTLink server port (0 = any free port)", range=PORT)
    host: str = param("127.0.0.1", "listen address")
    rate_hz: float = param(60.0, "sample rate", "Hz", (0.1, 10_000.0))
    header_version: int = param(1, "OpenIGTLink header version", range=(1, 2))
    noise_mm: float = param(0.15, "RMS noise per marker position", "mm", (0.0, 100.0))
    tremor_mm: float = param(0.1, "hand tremor amplitude of the tool", "mm", (0.0, 100.0))
    breathing_amplitude_mm: float = param(2.0, "breathing amplitude of the reference", "mm", (0.0, 100.0))
    breathing_hz: float = param(0.25, "breathing frequency", "Hz", (0.0, 10.0))
    seed: int = param(0, "random seed")
    tip_offset_mm: tuple = param((0.0, 0.0, 150.0), "tool tip in the Tool frame", "mm")
    occlusions: str = param("", "'Device:start_s:end_s[,...]' windows, e.g. 'StylusToTracker:5:6'")
    tool_pose_topic: str = param("sim/tool_tip_truth", "PoseStamped (frame Reference) that moves the simulated tool")
    stamp_at_send: bool = param(False, "header time = transmission (the simulator's wake-up delay excluded)")
    allowed_peers: str = param(LOOPBACK, PEERS)
    t0_wall_s: float = param(0.0, "time.time() of sample 0 (0 = at start; a respawned simulator continues)", "s")
    tracker_reference_xyz_mm: tuple = param((40.0, -120.0, -1500.0), "T_tracker_reference translation (before "
                                            "breathing; spine_nav.sim.tracker.default_T_tracker_reference)", "mm")
    tracker_reference_quat_xyzw: tuple = param((-0.7071067811865476, 0.0, 0.0, 0.7071067811865476),
                                               "T_tracker_reference rotation")


#: node name -> [(dataclass, only these fields / None (those with a description) / ALL_FIELDS[, name prefix])],
#: in declaration order
NODE_PARAMETERS: dict[str, list] = {
    "plan_publisher": [(PlanPublisherParams, None)],
    "registration": [(RegistrationConfig, REGISTRATION_CONFIG_FIELDS), (GateThresholds, ALL_FIELDS, "gate."),
                     (RegistrationParams, None)],
    "sim_tracker": [(SimTrackerParams, None)],
    "tracker_bridge": [(TrackerBridgeParams, None), (ReferenceJumpConfig, tuple(REFERENCE_JUMP_NAMES))],
    "slicer_output": [(SlicerOutputParams, None)],
    "trajectory_guard": [(GuardConfig, None), (TrajectoryGuardParams, None)],
    "arm_guide": [(ArmParams, None), (ArmGuideConfig, ARM_GUIDE_CONFIG_FIELDS), (ArmGuideParams, None)],
    "sim_arm": [(ArmParams, None), (SimArmParams, None)],
    "console_bridge": [(ConsoleBridgeParams, None)],
    "command_source": [(CommandSourceParams, None)],
}
