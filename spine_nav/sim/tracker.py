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

Simulation-control API (runtime fault injection, thread-safe; the server thread samples the model):

* :meth:`TrackerModel.occlude` ``(device, duration_s)``: the device is reported missing from the next
  sample on for ``duration_s`` (model time).
* :meth:`TrackerModel.bump` ``(T_delta)``: from the next sample on the reference ARRAY is knocked
  relative to the patient: reported ``ReferenceToTracker`` = ``T_tracker_reference_true(t) @ T_delta``
  (bumps accumulate: ``T_delta_total = T_delta_1 @ T_delta_2 ...``). The tool truth (given in the
  patient/Reference frame) and the anatomy do not move, so a navigation system that keeps using the
  old registration is now wrong by ``T_delta``.
* :meth:`TrackerModel.T_tracker_reference_true` ``(t_rel_s)``: the patient's Reference frame in the
  tracker (static pose + breathing, never bumped); :meth:`TrackerModel.T_tracker_reference_array`
  is what the tracker reports for the array (incl. bumps).
* Model time ``t_rel_s`` = sample index / rate_hz; :meth:`TrackerModel.model_time_s` maps a
  ``time.time()`` value to it (the server sets ``t0_s = time.time()`` when it starts).

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
        # runtime faults (guarded by self._lock): extra occlusion windows and timed bumps
        self._occlusions: list[tuple[str, float, float]] = list(self.config.occlusions)
        self._bumps: list[tuple[float, np.ndarray]] = []  # (start t_rel_s, T_delta), in start order
        self._last_t_rel_s: float | None = None

    @property
    def period_s(self) -> float:
        return 1.0 / self.config.rate_hz

    def set_tool_pose_mm(self, T_reference_tooltip: np.ndarray | None) -> None:
        """Hold the tool tip at this pose (Reference frame, mm); None = tool not in the field of view."""
        with self._lock:
            self._tool_pose = (None if T_reference_tooltip is None
                               else validate_transform(T_reference_tooltip, "T_reference_tooltip"))

    # ---------------------------------------------------------------- simulation control (fault injection)
    def model_time_s(self, wall_s: float) -> float:
        """Model time (s since sample 0) of a ``time.time()`` value (uses ``t0_s`` set by the server)."""
        return float(wall_s) - self.t0_s

    def _next_sample_t_rel(self) -> float:
        """Model time of the next sample the caller has not taken yet ("now"); call with the lock held."""
        if self._last_t_rel_s is None:
            return 0.0
        return self._last_t_rel_s + 0.5 * self.period_s  # strictly after the last sample, at or before the next

    def occlude(self, device: str, duration_s: float, at_rel_s: float | None = None) -> tuple[float, float]:
        """Report ``device`` (e.g. ``StylusToTracker``) missing for ``duration_s`` from now (or from model
        time ``at_rel_s``). Returns the window ``(start_s, end_s)`` in model time."""
        if not duration_s > 0:
            raise ValueError(f"occlude: duration_s must be > 0, got {duration_s}")
        with self._lock:
            start = self._next_sample_t_rel() if at_rel_s is None else float(at_rel_s)
            window = (str(device), start, start + float(duration_s))
            self._occlusions.append(window)
        return window[1], window[2]

    def bump(self, T_delta: np.ndarray, at_rel_s: float | None = None) -> float:
        """Knock the reference array relative to the patient by ``T_delta`` (4x4 mm, in the array's own
        frame) from now (or model time ``at_rel_s``); returns the start (model time s)."""
        D = validate_transform(T_delta, "bump T_delta")
        with self._lock:
            start = self._next_sample_t_rel() if at_rel_s is None else float(at_rel_s)
            self._bumps.append((start, D))
            self._bumps.sort(key=lambda b: b[0])
        return start

    def clear_faults(self) -> None:
        """Remove runtime occlusions and bumps (the configured occlusion windows stay)."""
        with self._lock:
            self._occlusions = list(self.config.occlusions)
            self._bumps = []

    def T_reference_bump(self, t_rel_s: float) -> np.ndarray:
        """Accumulated bump ``T_delta`` in effect at model time ``t_rel_s`` (identity when none)."""
        with self._lock:
            bumps = [D for start, D in self._bumps if start <= t_rel_s]
        T = np.eye(4)
        for D in bumps:
            T = T @ D
        return T

    def T_tracker_reference_true(self, t_rel_s: float) -> np.ndarray:
        """The patient's Reference frame in the tracker at model time ``t_rel_s`` (static pose moved by
        breathing; never bumped). Tool truth and anatomy are rigid in this frame."""
        return self.T_tracker_reference(t_rel_s)

    def T_tracker_reference_array(self, t_rel_s: float) -> np.ndarray:
        """Where the reference ARRAY is (what the tracker reports): true reference @ accumulated bump."""
        return self.T_tracker_reference(t_rel_s) @ self.T_reference_bump(t_rel_s)

    # ---------------------------------------------------------------- model
    def T_tracker_reference(self, t_rel_s: float) -> np.ndarray:
        """Patient Reference frame in the tracker (static + breathing), mm; see T_tracker_reference_true."""
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
        with self._lock:
            return any(dev == device and a <= t_rel_s < b for dev, a, b in self._occlusions)

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
        with self._lock:
            self._last_t_rel_s = t_rel if self._last_t_rel_s is None else max(self._last_t_rel_s, t_rel)
        truth: dict[str, np.ndarray] = {}
        T_tr = self.T_tracker_reference(t_rel)  # patient frame (tool truth is given in it)
        truth["ReferenceToTracker"] = T_tr @ self.T_reference_bump(t_rel)  # the array (moved by bumps)
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
