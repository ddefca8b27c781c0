"""Simulated optical tracker (pure core): what a camera would report, in PLUS naming, with ground truth.

Per sample ``k`` at ``rate_hz`` (tracker time ``t = t0 + k / rate_hz``):

* ``ReferenceToTracker`` = ``T_tracker_reference(t)``: a static pose moved by breathing,
  ``amplitude_mm * sin(2 pi f t)`` along ``breathing_direction`` (Reference frame; default mostly
  anterior-posterior = Reference y, as LPS).
* ``StylusToTracker`` = ``T_tracker_reference(t) @ T_reference_tooltip(t) @ inv(T_tool_tooltip)`` where
  ``T_reference_tooltip`` comes from a pose provider callback ``f(t_s) -> 4x4`` or the last
  :meth:`TrackerModel.set_tool_pose_mm`, plus tremor (sum of 8-12 Hz sinusoids, ``tremor_mm`` RMS).
* ``ArmMarkerToTracker`` when an arm-marker provider is set (``f(t_s) -> T_tracker_armmarker``).
* Measurement noise: each tool carries a marker geometry; every marker gets isotropic Gaussian
  noise (``noise_mm`` RMS per marker position) and the pose is re-fitted (Kabsch), so pose noise
  has the realistic lever-arm structure.
* Occlusions: ``(device, start_s, end_s)`` windows relative to ``t0``: the tool is reported missing.

Deterministic for a given ``seed`` and sample index. Units mm, s.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from spine_nav.geometry import invert, make_transform, validate_transform
from spine_nav.tracking.tools import ToolDefinition

PoseProvider = Callable[[float], np.ndarray]

#: Marker geometries (mm, in the tool's own frame) like passive 4-sphere arrays.
MARKERS_MM = {
    "StylusToTracker": np.array([[0, 0, 0], [0, 50, 0], [-40, 90, 0], [35, 120, 0]], dtype=float),
    "ReferenceToTracker": np.array([[0, 0, 0], [60, 0, 0], [0, 80, 0], [90, 70, 0]], dtype=float),
    "ArmMarkerToTracker": np.array([[0, 0, 0], [70, 0, 0], [0, 50, 0], [60, 90, 0]], dtype=float),
}


def default_T_tracker_reference() -> np.ndarray:
    """Reference array ~1.5 m in front of the camera, rotated so its y axis (AP) faces the camera."""
    R = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    return make_transform(R, [40.0, -120.0, -1500.0])


def _rt(R: np.ndarray, t) -> np.ndarray:
    """4x4 from R, t without re-validation (the simulator builds them from orthonormal parts; it runs at up
    to 1 kHz and geometry.make_transform/compose validate every call, ~0.1 ms each here)."""
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def kabsch(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Rigid T with ``Q ~= T @ P`` (least squares, rows are points)."""
    cp, cq = P.mean(0), Q.mean(0)
    H = (P - cp).T @ (Q - cq)
    U, _, Vt = np.linalg.svd(H)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    return _rt(R, cq - R @ cp)


@dataclass
class TrackerModelConfig:
    rate_hz: float = 60.0
    T_tracker_reference: np.ndarray = field(default_factory=default_T_tracker_reference)
    breathing_amplitude_mm: float = 2.0
    breathing_hz: float = 0.25
    breathing_direction: tuple[float, float, float] = (0.1, 1.0, 0.05)
    noise_mm: float = 0.15
    tremor_mm: float = 0.0
    occlusions: tuple[tuple[str, float, float], ...] = ()
    tool: ToolDefinition = field(default_factory=ToolDefinition)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1.0 <= self.rate_hz <= 2000.0:
            raise ValueError(f"rate_hz must be in [1, 2000], got {self.rate_hz}")
        if self.noise_mm < 0 or self.tremor_mm < 0 or self.breathing_amplitude_mm < 0:
            raise ValueError("noise_mm, tremor_mm and breathing_amplitude_mm must be >= 0")


@dataclass
class TrackerFrame:
    """One tracker sample: ``poses`` device -> measured 4x4 (mm) or None when occluded; ``truth`` the exact ones."""

    index: int
    timestamp_s: float
    poses: dict[str, np.ndarray | None]
    truth: dict[str, np.ndarray]
    T_reference_tooltip: np.ndarray | None


class TrackerModel:
    def __init__(self, config: TrackerModelConfig | None = None, t0_s: float = 0.0,
                 tool_pose_provider: PoseProvider | None = None,
                 arm_marker_provider: PoseProvider | None = None) -> None:
        self.config = config or TrackerModelConfig()
        self.t0_s = float(t0_s)
        validate_transform(self.config.T_tracker_reference, "T_tracker_reference")
        self.tool_pose_provider = tool_pose_provider
        self.arm_marker_provider = arm_marker_provider
        self._tool_pose: np.ndarray | None = None
        self._lock = threading.Lock()
        d = np.asarray(self.config.breathing_direction, dtype=float)
        self._breath_dir = d / np.linalg.norm(d)
        self._T_tooltip_tool = invert(self.config.tool.T_tool_tooltip)
        rng = np.random.default_rng(self.config.seed)
        self._tremor_hz = rng.uniform(8.0, 12.0, size=(3, 3))
        self._tremor_phase = rng.uniform(0, 2 * np.pi, size=(3, 3))

    @property
    def period_s(self) -> float:
        return 1.0 / self.config.rate_hz

    def set_tool_pose_mm(self, T_reference_tooltip: np.ndarray | None) -> None:
        """Hold the tool tip at this pose (Reference frame, mm); None = tool not in the field of view."""
        with self._lock:
            self._tool_pose = (None if T_reference_tooltip is None
                               else validate_transform(T_reference_tooltip, "T_reference_tooltip"))

    def T_tracker_reference(self, t_rel_s: float) -> np.ndarray:
        c = self.config
        shift = self._breath_dir * c.breathing_amplitude_mm * np.sin(2 * np.pi * c.breathing_hz * t_rel_s)
        T = np.array(c.T_tracker_reference, dtype=float)
        T[:3, 3] += T[:3, :3] @ shift
        return T

    def _tool_truth(self, t_rel_s: float) -> np.ndarray | None:
        if self.tool_pose_provider is not None:
            T = self.tool_pose_provider(t_rel_s)
        else:
            with self._lock:
                T = self._tool_pose
        if T is None:
            return None
        T = np.array(T, dtype=float)
        if self.config.tremor_mm > 0:
            wave = np.sin(2 * np.pi * self._tremor_hz * t_rel_s + self._tremor_phase).sum(axis=1)
            T[:3, 3] += wave * self.config.tremor_mm / np.sqrt(1.5)  # 3 unit sinusoids: RMS sqrt(1.5)
        return T

    def _occluded(self, device: str, t_rel_s: float) -> bool:
        return any(dev == device and a <= t_rel_s < b for dev, a, b in self.config.occlusions)

    def _measure(self, device: str, T_true: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.config.noise_mm <= 0:
            return T_true
        P = MARKERS_MM.get(device, MARKERS_MM["StylusToTracker"])
        noisy = P + rng.normal(scale=self.config.noise_mm / np.sqrt(3), size=P.shape)  # per-marker 3D RMS
        return T_true @ kabsch(P, noisy)

    def sample(self, index: int) -> TrackerFrame:
        """Sample ``index`` (deterministic for the seed and index)."""
        c = self.config
        t_rel = index / c.rate_hz
        rng = np.random.default_rng((c.seed, index))
        truth: dict[str, np.ndarray] = {}
        T_tr = self.T_tracker_reference(t_rel)
        truth["ReferenceToTracker"] = T_tr
        T_ref_tip = self._tool_truth(t_rel)
        if T_ref_tip is not None:
            truth[c.tool.device] = T_tr @ T_ref_tip @ self._T_tooltip_tool
        if self.arm_marker_provider is not None:
            T_arm = self.arm_marker_provider(t_rel)
            if T_arm is not None:
                truth["ArmMarkerToTracker"] = np.asarray(T_arm, dtype=float)
        poses: dict[str, np.ndarray | None] = {}
        for dev in ("ReferenceToTracker", c.tool.device, "ArmMarkerToTracker"):
            if dev not in truth:
                if dev == c.tool.device:
                    poses[dev] = None  # tool not present: reported missing
                continue
            poses[dev] = None if self._occluded(dev, t_rel) else self._measure(dev, truth[dev], rng)
        return TrackerFrame(index, self.t0_s + t_rel, poses, truth, T_ref_tip)


def parse_occlusions(text: str) -> tuple[tuple[str, float, float], ...]:
    """``"StylusToTracker:5:6,ReferenceToTracker:10:10.5"`` -> ((device, start_s, end_s), ...)."""
    out = []
    for item in filter(None, (x.strip() for x in (text or "").split(","))):
        try:
            dev, a, b = item.rsplit(":", 2)
            a_s, b_s = float(a), float(b)
        except ValueError:
            raise ValueError(f"occlusions: {item!r} is not Device:start_s:end_s") from None
        if not b_s > a_s >= 0:
            raise ValueError(f"occlusions: {item!r} needs 0 <= start_s < end_s")
        out.append((dev, a_s, b_s))
    return tuple(out)
