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

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from spine_nav.geometry import NotRigidError, make_transform, rigid_rows
from spine_nav.tracking.codec import MalformedMessage
from spine_nav.tracking.native import frames as _frames


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
# bridge's 0.2 ms p50 latency budget. Wire poses are validated exactly once here (geometry.rigid_rows:
# the checks of validate_transform at float32 tolerance, in plain floats) and then composed in plain
# floats with the closed-form rigid inverse below. Off the hot path the geometry module is used.
_MALFORMED_KIND = {"non-finite": "non-finite pose", "non-rigid": "non-rigid pose"}


def validate_pose(matrix: np.ndarray, device: str) -> np.ndarray:
    """Finite, rigid 4x4 (mm) or :class:`MalformedMessage` (kind ``non-finite pose`` / ``non-rigid pose``)."""
    m = np.asarray(matrix, dtype=float)
    validate_rows(m, device)
    return m


def validate_rows(m, device: str) -> list[list[float]]:
    """:func:`validate_pose` of a float ndarray or of its four rows as plain floats (the codec's
    :class:`~spine_nav.tracking.codec.TransformRows`); returns the first three rows as lists (hot path).
    The one rigid check (:func:`spine_nav.geometry.rigid_rows`, one tolerance) for both forms."""
    try:
        return rigid_rows(m, device)
    except NotRigidError as exc:  # the message names the matrix as before: "'Device' matrix: ..."
        raise MalformedMessage(_MALFORMED_KIND[exc.kind], f"{device!r} matrix" + str(exc)[len(device):]) from None


def compose_rows_inv_a_b_c(A: list, B: list, C: list) -> list[list[float]]:
    """``inv(A) @ B @ C`` for validated rigid transforms given as 3 rows of 4 floats; returns 3 rows.

    Plain floats: ~3x cheaper than the numpy inverse and two matrix products on 4x4 arrays here. The definition of
    its C twin ``_frames.compose_inv_a_b_c`` (:data:`compose_tip_rows` when built; tests/test_native_frames.py)."""
    (a00, a01, a02, a03), (a10, a11, a12, a13), (a20, a21, a22, a23) = A
    # inv(A) = [R^T, -R^T t]
    i0 = (a00, a10, a20, -(a00 * a03 + a10 * a13 + a20 * a23))
    i1 = (a01, a11, a21, -(a01 * a03 + a11 * a13 + a21 * a23))
    i2 = (a02, a12, a22, -(a02 * a03 + a12 * a13 + a22 * a23))
    (b00, b01, b02, b03), (b10, b11, b12, b13), (b20, b21, b22, b23) = B
    (c00, c01, c02, c03), (c10, c11, c12, c13), (c20, c21, c22, c23) = C
    out = []
    for r0, r1, r2, r3 in (i0, i1, i2):
        # row of inv(A) @ B
        m0 = r0 * b00 + r1 * b10 + r2 * b20
        m1 = r0 * b01 + r1 * b11 + r2 * b21
        m2 = r0 * b02 + r1 * b12 + r2 * b22
        m3 = r0 * b03 + r1 * b13 + r2 * b23 + r3
        out.append([m0 * c00 + m1 * c10 + m2 * c20, m0 * c01 + m1 * c11 + m2 * c21,
                    m0 * c02 + m1 * c12 + m2 * c22, m0 * c03 + m1 * c13 + m2 * c23 + m3])
    return out


#: what the composer calls per tool tip: the C twin when built (the same doubles), else the Python definition above
compose_tip_rows = _frames.compose_inv_a_b_c if _frames is not None else compose_rows_inv_a_b_c

_BOTTOM_ROW = (0.0, 0.0, 0.0, 1.0)


class ComposedPose(NamedTuple):
    """One output of :class:`PoseComposer`.

    kind: ``tool_tip`` (T_reference_tooltip), ``reference`` (T_tracker_reference), ``arm_marker``
    (T_tracker_armmarker) or ``stale`` (tool sample without a usable reference: no pose, ``detail``
    says why). ``rows``: the validated pose's first three rows (plain floats, mm; the hot path
    publishes from them); ``matrix``: the same as a 4x4 ndarray, built on each access.
    ``timestamp_s``: the tool/device sample's tracker time; ``skew_ms``: |tool - reference| time
    used in the composition.

    A NamedTuple, immutable: the bridge's steady-frame path builds it with one C call (:data:`new_pose`), where the
    dataclass it was took a Python ``__init__`` per pose on the 1 kHz path.
    """

    kind: str
    name: str
    device: str
    timestamp_s: float
    rows: list | None
    skew_ms: float = 0.0
    detail: str = ""

    @property
    def matrix(self) -> np.ndarray | None:
        return None if self.rows is None else np.array([*self.rows, _BOTTOM_ROW])


#: ``new_pose(ComposedPose, (kind, name, device, timestamp_s, rows, skew_ms, detail))``: a ComposedPose from all its
#: fields in order, in one C call (``tuple.__new__``, without the NamedTuple's Python-level ``__new__``)
new_pose = tuple.__new__


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
    #: tool name -> its samples waiting for a reference (filled by :meth:`add`; read by the bridge's steady-frame path)
    pending: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._refs = deque(maxlen=self.history)
        self._T_tool_tooltip = {t.name: t.T_tool_tooltip[:3].tolist() for t in self.tools}  # 3 rows of 4
        self._by_device = {t.device: t for t in self.tools}
        self._by_tip = {t.tip_device: t for t in self.tools if t.tip_device}
        self.pending = {t.name: deque() for t in self.tools}
        #: device -> (tool, T_tool_tooltip rows) of the tools whose samples :meth:`add` composes with a reference of
        #: the same frame as :meth:`keep_reference` + :meth:`tip` when nothing is pending: the bridge's steady-frame
        #: path (``_frames.steady_tip``) takes only these (not the reference or arm marker device, not a tool that
        #: streams its own tip, and none when ``max_skew_ms`` < 0). Fields are fixed after construction.
        self.steady_tips = {} if self.max_skew_ms < 0 else {
            t.device: (t, self._T_tool_tooltip[t.name]) for t in self.tools
            if t.device not in (self.reference_device, self.arm_marker_device) and t.device not in self._by_tip}

    def device_names(self) -> set[str]:
        return {self.reference_device, self.arm_marker_device, *self._by_device, *self._by_tip}

    def tool_for_device(self, device: str) -> ToolDefinition | None:
        return self._by_device.get(device) or self._by_tip.get(device)

    def _best_reference(self, t_s: float):
        best = None
        for t_ref, T_ref in reversed(self._refs):  # time-ordered: stop once moving away from t_s (T_ref: 3 rows)
            dt = abs(t_ref - t_s)
            if best is None or dt < best[0]:
                best = (dt, t_ref, T_ref)
            elif t_ref < t_s:
                break
        return best

    def _stale(self, tool: ToolDefinition, t_s: float, why: str) -> ComposedPose:
        self.stale_count += 1
        return ComposedPose("stale", tool.name, tool.device, t_s, None, detail=why)

    def keep_reference(self, timestamp_s: float, rows: list) -> ComposedPose:
        """Keep a validated reference sample for later compositions; returns its ``reference`` output."""
        self._refs.append((timestamp_s, rows))
        return new_pose(ComposedPose, ("reference", "reference", self.reference_device, timestamp_s, rows, 0.0, ""))

    def tip(self, tool: ToolDefinition, timestamp_s: float, tool_rows: list, reference_rows: list,
            skew_s: float) -> ComposedPose:
        """The ``tool_tip`` output of a tool sample composed with a reference sample ``skew_s`` apart in tracker time
        (|tool - reference|). The bridge's steady-frame path builds the same output from ``_frames.steady_tip``."""
        return ComposedPose("tool_tip", tool.name, tool.device, timestamp_s,
                            compose_tip_rows(reference_rows, tool_rows, self._T_tool_tooltip[tool.name]),
                            skew_ms=skew_s * 1e3)

    def add(self, device: str, matrix: np.ndarray, timestamp_s: float,
            rows: list | None = None) -> list[ComposedPose]:
        """Feed one validated pose sample (mm, tracker time); returns what can be published now.

        ``rows``: the matrix's first three rows as lists, when the caller has them (see :func:`validate_rows`);
        then ``matrix`` may be None."""
        out: list[ComposedPose] = []
        skew_s = self.max_skew_ms * 1e-3
        if rows is None:
            rows = np.asarray(matrix, dtype=float)[:3].tolist()
        if device == self.reference_device:
            out.append(self.keep_reference(timestamp_s, rows))
            for tool in self.tools:
                pend = self.pending[tool.name]
                if not pend:
                    continue
                keep = deque()
                while pend:
                    t_s, T = pend.popleft()
                    ref = self._best_reference(t_s)
                    if ref[0] <= skew_s:
                        out.append(self.tip(tool, t_s, T, ref[2], ref[0]))
                    elif timestamp_s > t_s + skew_s:
                        out.append(self._stale(tool, t_s, f"no reference sample within {self.max_skew_ms:g} ms "
                                                          f"(closest {ref[0] * 1e3:.1f} ms)"))
                    else:
                        keep.append((t_s, T))
                self.pending[tool.name] = keep
            return out
        if device == self.arm_marker_device:
            return [ComposedPose("arm_marker", "arm_marker", device, timestamp_s, rows)]
        tool = self._by_tip.get(device)
        if tool is not None:
            return [ComposedPose("tool_tip", tool.name, device, timestamp_s, rows)]
        tool = self._by_device.get(device)
        if tool is None:
            return out
        ref = self._best_reference(timestamp_s)
        if ref is not None and ref[0] <= skew_s:
            out.append(self.tip(tool, timestamp_s, rows, ref[2], ref[0]))
        elif ref is not None and max(t for t, _ in self._refs) > timestamp_s + skew_s:
            out.append(self._stale(tool, timestamp_s, f"no reference sample within {self.max_skew_ms:g} ms "
                                                      f"(closest {ref[0] * 1e3:.1f} ms)"))
        else:  # its reference may still be on the way
            pend = self.pending[tool.name]
            pend.append((timestamp_s, rows))
            while len(pend) > self.max_pending:
                t_old, _ = pend.popleft()
                out.append(self._stale(tool, t_old, "reference not received (pending tool samples exceeded "
                                                    f"{self.max_pending})"))
        return out
