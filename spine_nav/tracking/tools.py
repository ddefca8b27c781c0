"""Tool definitions and pose composition in PLUS naming.

Frames: ``StylusToTracker`` is ``T_tracker_tool``, ``ReferenceToTracker`` is ``T_tracker_reference``,
``StylusTipToReference`` is ``T_reference_tooltip``. The tool tip frame (``ToolTip``) has its origin at
the pivot-calibrated tip and +z along the shaft toward the tip; ``T_tool_tooltip`` comes from the tool
definition. What the guard needs::

    T_reference_tooltip = invert(T_tracker_reference) @ T_tracker_tool @ T_tool_tooltip

using only a reference sample whose tracker timestamp is within ``max_skew_ms`` of the tool sample.
A tool sample that arrives before its reference (same tracker frame, sent second) waits in a small
bounded pending list; a tool sample with no reference close enough is reported (``kind="stale"``),
never published.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from spine_nav.geometry import make_transform
from spine_nav.tracking.codec import MalformedMessage

#: float32 matrices from a tracker are orthonormal to ~1e-6; anything beyond this is a shear/scale.
POSE_RIGID_TOL = 1e-3


def tooltip_transform(tip_offset_mm, shaft_direction=None) -> np.ndarray:
    """``T_tool_tooltip``: origin at ``tip_offset_mm`` (Tool frame), +z along ``shaft_direction``.

    ``shaft_direction`` defaults to the direction from the tool origin to the tip (for a straight
    stylus whose marker origin lies on the shaft); a zero offset with no direction gives identity rotation.
    """
    t = np.asarray(tip_offset_mm, dtype=float).reshape(3)
    d = np.asarray(shaft_direction if shaft_direction is not None else t, dtype=float).reshape(3)
    n = np.linalg.norm(d)
    if n < 1e-9:
        return make_transform(np.eye(3), t)
    z = d / n
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return make_transform(np.column_stack([x, y, z]), t)


@dataclass(frozen=True)
class ToolDefinition:
    """A tracked tool. ``device``: its ``XToTracker`` name; ``tip_device``: a ``XTipToReference`` name
    the tracker may send directly (then no composition is needed); ``T_tool_tooltip`` from pivot calibration."""

    name: str = "stylus"
    device: str = "StylusToTracker"
    tip_device: str = "StylusTipToReference"
    tip_offset_mm: tuple[float, float, float] = (0.0, 0.0, 150.0)
    shaft_direction: tuple[float, float, float] | None = None

    @property
    def T_tool_tooltip(self) -> np.ndarray:
        return tooltip_transform(self.tip_offset_mm, self.shaft_direction)


# Hot path note: spine_nav.geometry.compose/invert re-validate every operand (scipy/numpy checks,
# measured 0.1-0.4 ms per sample on these loaded 2-core machines), which alone would exceed the
# bridge's 0.2 ms p50 latency budget. Wire poses are validated exactly once here (same checks and
# meaning as geometry.validate_transform, float32 tolerance) and then composed with plain matrix
# products / the closed-form rigid inverse below. Off the hot path the geometry module is used.
_I3 = np.eye(3)


def validate_pose(matrix: np.ndarray, device: str) -> np.ndarray:
    """Finite, rigid 4x4 (mm) or :class:`MalformedMessage` (kind ``non-finite pose`` / ``non-rigid pose``).

    Plain-Python arithmetic on the 16 floats (numpy calls on 4x4 arrays cost ~10x more here)."""
    m = np.asarray(matrix, dtype=float)
    if m.shape != (4, 4):
        raise MalformedMessage("non-finite pose", f"{device!r} matrix has shape {m.shape}")
    rows = m.tolist()
    if not math.isfinite(sum(rows[0]) + sum(rows[1]) + sum(rows[2]) + sum(rows[3])):  # NaN/inf propagate
        raise MalformedMessage("non-finite pose", f"{device!r} matrix has NaN/inf")
    c0, c1, c2 = ([rows[0][j], rows[1][j], rows[2][j]] for j in range(3))
    dot = lambda a, b: a[0] * b[0] + a[1] * b[1] + a[2] * b[2]  # noqa: E731
    ortho = max(abs(dot(c0, c0) - 1.0), abs(dot(c1, c1) - 1.0), abs(dot(c2, c2) - 1.0),
                abs(dot(c0, c1)), abs(dot(c0, c2)), abs(dot(c1, c2)))
    det = dot(c0, [c1[1] * c2[2] - c1[2] * c2[1], c1[2] * c2[0] - c1[0] * c2[2], c1[0] * c2[1] - c1[1] * c2[0]])
    bottom = max(abs(rows[3][0]), abs(rows[3][1]), abs(rows[3][2]), abs(rows[3][3] - 1.0))
    if ortho > POSE_RIGID_TOL or bottom > POSE_RIGID_TOL or det <= 0:
        raise MalformedMessage("non-rigid pose", f"{device!r}: rotation not orthonormal (|R^T R - I| = {ortho:.2g}), "
                                                 f"det {det:.3g}, bottom row {rows[3]}")
    return m


def rigid_inverse(T: np.ndarray) -> np.ndarray:
    """Closed-form inverse of an already validated rigid transform (hot path; see note above)."""
    out = T.T.copy()  # rotation part transposed; fix the translation column and the bottom row
    out[3, :3] = 0.0
    out[:3, 3] = -(out[:3, :3] @ T[:3, 3])
    return out


@dataclass
class ComposedPose:
    """One output of :class:`PoseComposer`.

    kind: ``tool_tip`` (T_reference_tooltip), ``reference`` (T_tracker_reference), ``arm_marker``
    (T_tracker_armmarker), ``tool`` (raw T_tracker_tool) or ``stale`` (tool sample without a usable
    reference: ``matrix`` is None and ``detail`` says why). ``timestamp_s``: the tool/device sample's
    tracker time; ``skew_ms``: |tool - reference| time used in the composition.
    """

    kind: str
    name: str
    device: str
    timestamp_s: float
    matrix: np.ndarray | None
    skew_ms: float = 0.0
    detail: str = ""


@dataclass
class PoseComposer:
    tools: tuple[ToolDefinition, ...] = (ToolDefinition(),)
    reference_device: str = "ReferenceToTracker"
    arm_marker_device: str = "ArmMarkerToTracker"
    max_skew_ms: float = 2.0
    history: int = 64
    max_pending: int = 8
    stale_count: int = 0
    _refs: deque = field(default_factory=deque, repr=False)
    _pending: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._refs = deque(maxlen=self.history)
        self._T_tool_tooltip = {t.name: t.T_tool_tooltip for t in self.tools}
        self._by_device = {t.device: t for t in self.tools}
        self._by_tip = {t.tip_device: t for t in self.tools if t.tip_device}
        self._pending = {t.name: deque() for t in self.tools}

    def device_names(self) -> set[str]:
        return {self.reference_device, self.arm_marker_device, *self._by_device, *self._by_tip}

    def tool_for_device(self, device: str) -> ToolDefinition | None:
        return self._by_device.get(device) or self._by_tip.get(device)

    def _best_reference(self, t_s: float):
        best = None
        for t_ref, T_ref in reversed(self._refs):  # time-ordered: stop once moving away from t_s
            dt = abs(t_ref - t_s)
            if best is None or dt < best[0]:
                best = (dt, t_ref, T_ref)
            elif t_ref < t_s:
                break
        return best

    def _compose(self, tool: ToolDefinition, t_s: float, T_tracker_tool, ref) -> ComposedPose:
        dt, _, T_tracker_reference = ref
        T = rigid_inverse(T_tracker_reference) @ T_tracker_tool @ self._T_tool_tooltip[tool.name]
        return ComposedPose("tool_tip", tool.name, tool.device, t_s, T, skew_ms=dt * 1e3)

    def _stale(self, tool: ToolDefinition, t_s: float, why: str) -> ComposedPose:
        self.stale_count += 1
        return ComposedPose("stale", tool.name, tool.device, t_s, None, detail=why)

    def add(self, device: str, matrix: np.ndarray, timestamp_s: float) -> list[ComposedPose]:
        """Feed one validated pose sample (mm, tracker time); returns what can be published now."""
        out: list[ComposedPose] = []
        skew_s = self.max_skew_ms * 1e-3
        if device == self.reference_device:
            self._refs.append((timestamp_s, matrix))
            out.append(ComposedPose("reference", "reference", device, timestamp_s, matrix))
            for tool in self.tools:
                pend = self._pending[tool.name]
                keep = deque()
                while pend:
                    t_s, T = pend.popleft()
                    ref = self._best_reference(t_s)
                    if ref[0] <= skew_s:
                        out.append(self._compose(tool, t_s, T, ref))
                    elif timestamp_s > t_s + skew_s:
                        out.append(self._stale(tool, t_s, f"no reference sample within {self.max_skew_ms:g} ms "
                                                          f"(closest {ref[0] * 1e3:.1f} ms)"))
                    else:
                        keep.append((t_s, T))
                self._pending[tool.name] = keep
            return out
        if device == self.arm_marker_device:
            return [ComposedPose("arm_marker", "arm_marker", device, timestamp_s, matrix)]
        tool = self._by_tip.get(device)
        if tool is not None:
            return [ComposedPose("tool_tip", tool.name, device, timestamp_s, matrix)]
        tool = self._by_device.get(device)
        if tool is None:
            return out
        out.append(ComposedPose("tool", tool.name, device, timestamp_s, matrix))
        ref = self._best_reference(timestamp_s)
        if ref is not None and ref[0] <= skew_s:
            out.append(self._compose(tool, timestamp_s, matrix, ref))
        elif ref is not None and max(t for t, _ in self._refs) > timestamp_s + skew_s:
            out.append(self._stale(tool, timestamp_s, f"no reference sample within {self.max_skew_ms:g} ms "
                                                      f"(closest {ref[0] * 1e3:.1f} ms)"))
        else:  # its reference may still be on the way
            pend = self._pending[tool.name]
            pend.append((timestamp_s, matrix))
            while len(pend) > self.max_pending:
                t_old, _ = pend.popleft()
                out.append(self._stale(tool, t_old, "reference not received (pending tool samples exceeded "
                                                    f"{self.max_pending})"))
        return out
