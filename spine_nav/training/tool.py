"""The trainee's simulated tool (no ROS): page inputs -> a tool pose in Reference.

State per screw (Reference frame, the registered plan's screw with entry E and unit direction d):

* entry offset ``lat_mm`` along L (lateral: perpendicular to d and to the cranio-caudal axis, away from
  the level's midline) and ``cra_mm`` along C = d x L (the third axis of the screw's frame);
* tilts ``tilt_lat_deg`` (d turned toward L, the axial plane) and ``tilt_cra_deg`` (d turned toward
  C, the sagittal plane);
* ``depth_mm``: the tip's distance from the (offset) entry along the tool's axis (negative: above the
  entry; the tool starts ``START_DEPTH_MM`` above it).

Pose: tip = E + lat L + cra C + depth a, with a = normalise(d + tan(tilt_lat) L + tan(tilt_cra) C); tool
+z along a (toward the tip), as :func:`spine_nav.training.case.tool_pose`.
Inputs are increments (keys, gamepad) or an entry point picked on a slice (projected on the plane
through E normal to d). Limits: offsets +-30 mm, tilts +-30 deg, depth -60 mm .. planned depth + 15 mm.

Robot mode (:class:`GuideDrill`): only the depth, along the guide the arm holds; the rest is ignored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from spine_nav.training.case import tool_pose

START_DEPTH_MM = -20.0
LIMITS = {"lat_mm": 30.0, "cra_mm": 30.0, "tilt_lat_deg": 30.0, "tilt_cra_deg": 30.0}
#: Depth range (mm past the entry): from 60 mm above the entry to 15 mm past the planned depth (room to
#: overrun the guard's depth stop and be told so; a design choice of the trainee tool, not a measurement).
DEPTH_MIN_MM, OVERRUN_MAX_MM = -60.0, 15.0


class InputError(ValueError):
    """A page input that cannot be applied (message names the field)."""


@dataclass
class TraineeTool:
    entry_mm: np.ndarray       # planned entry, Reference
    direction: np.ndarray      # planned unit direction, Reference
    lateral: np.ndarray        # L, Reference
    planned_depth_mm: float
    lat_mm: float = 0.0
    cra_mm: float = 0.0
    tilt_lat_deg: float = 0.0
    tilt_cra_deg: float = 0.0
    depth_mm: float = START_DEPTH_MM

    @classmethod
    def for_screw(cls, screw_ref, lateral_ref: np.ndarray) -> "TraineeTool":
        return cls(np.asarray(screw_ref.entry_mm, float), np.asarray(screw_ref.direction, float),
                   np.asarray(lateral_ref, float) / np.linalg.norm(lateral_ref), float(screw_ref.depth_mm))

    @property
    def cranial(self) -> np.ndarray:
        c = np.cross(self.direction, self.lateral)
        return c / np.linalg.norm(c)

    def axis(self) -> np.ndarray:
        a = (self.direction + math.tan(math.radians(self.tilt_lat_deg)) * self.lateral
             + math.tan(math.radians(self.tilt_cra_deg)) * self.cranial)
        return a / np.linalg.norm(a)

    def tip_mm(self) -> np.ndarray:
        return self.entry_mm + self.lat_mm * self.lateral + self.cra_mm * self.cranial + self.depth_mm * self.axis()

    def pose(self) -> np.ndarray:
        """T_reference_tooltip (4x4 mm)."""
        return tool_pose(self.tip_mm(), self.axis())

    def apply(self, msg: Mapping[str, Any]) -> None:
        """Apply one page input: ``move`` {lat_mm, cra_mm, tilt_lat_deg, tilt_cra_deg, depth_mm} increments
        and/or ``entry_mm`` [x, y, z] (Reference; sets the entry offset, tool back above the entry)."""
        if "entry_mm" in msg:
            p = _vec3(msg["entry_mm"], "entry_mm")
            v = p - self.entry_mm
            self.lat_mm = _clamp(float(np.dot(v, self.lateral)), LIMITS["lat_mm"])
            self.cra_mm = _clamp(float(np.dot(v, self.cranial)), LIMITS["cra_mm"])
            self.depth_mm = min(self.depth_mm, START_DEPTH_MM)
        for k, dv in parse_move(msg).items():
            if k == "depth_mm":
                self.depth_mm = _depth_clamp(self.depth_mm + dv, self.planned_depth_mm)
            else:
                setattr(self, k, _clamp(getattr(self, k) + dv, LIMITS[k]))

    def state(self) -> dict[str, float]:
        return {"lat_mm": self.lat_mm, "cra_mm": self.cra_mm, "tilt_lat_deg": self.tilt_lat_deg,
                "tilt_cra_deg": self.tilt_cra_deg, "depth_mm": self.depth_mm, "planned_depth_mm": self.planned_depth_mm}


#: How often the drill is re-posed on the moving guide in robot mode (s), between inputs (the page) or script
#: lines (the scripts): 10 ms, the simulated tracker's 100 Hz, so that every tracker sample sees it on the guide.
FOLLOW_PERIOD_S = 0.01
#: What the trainee is told when robot mode ignores an input (:class:`GuideDrill`).
IGNORED_NOTICE = "entry and tilt are held by the guide in robot mode: only the depth moves (f/b, PageDown/PageUp)"


@dataclass
class GuideDrill:
    """The trainee's drill in robot mode: only its depth along the arm's guide (mm past the planned entry,
    the same range as :class:`TraineeTool`). The guide's pose comes from the arm (not from here); entry
    offsets, tilts and slice clicks are ignored, each with :data:`IGNORED_NOTICE`. Before the arm is aligned
    on the screw nothing moves; while the arm holds, the drill may be withdrawn but not advanced (the guide
    is frozen where the stop caught it; the trainee resumes first)."""

    planned_depth_mm: float
    depth_mm: float = START_DEPTH_MM

    def apply(self, msg: Mapping[str, Any], aligned: bool, holding: bool = False, stop_cause: str = "") -> tuple[bool, str]:
        """One page input (the :meth:`TraineeTool.apply` format). Returns (depth changed, notice for the
        trainee: "" when there is nothing to say)."""
        dv = 0.0
        ignored = "entry_mm" in msg
        for k, x in parse_move(msg).items():
            if k == "depth_mm":
                dv = x
            elif x != 0.0:
                ignored = True
        notice = IGNORED_NOTICE if ignored else ""
        if dv == 0.0:
            return False, notice
        if not aligned:
            return False, "align the arm on this screw first (a): the drill moves only along the aligned guide"
        if holding and dv > 0.0:
            return False, f"the arm holds ({stop_cause or 'no cause given'}): withdraw (b) or resume (r) before advancing"
        before = self.depth_mm
        self.depth_mm = _depth_clamp(self.depth_mm + dv, self.planned_depth_mm)
        return self.depth_mm != before, notice

    def state(self) -> dict[str, float]:
        return {"lat_mm": 0.0, "cra_mm": 0.0, "tilt_lat_deg": 0.0, "tilt_cra_deg": 0.0, "depth_mm": self.depth_mm,
                "planned_depth_mm": self.planned_depth_mm}


def parse_move(msg: Mapping[str, Any]) -> dict[str, float]:
    """The increments of one page input's ``move`` (``{name: step}``, names of :data:`LIMITS` and
    ``depth_mm``), validated: InputError naming the field for an unknown name, a non-number, a non-finite
    step or one over 50 (mm or deg). Shared by :class:`TraineeTool` and :class:`GuideDrill`."""
    move = msg.get("move", {})
    if not isinstance(move, Mapping):
        raise InputError("move: expected an object of increments")
    out: dict[str, float] = {}
    for k, v in move.items():
        if k not in LIMITS and k != "depth_mm":
            raise InputError(f"move.{k}: unknown (lat_mm, cra_mm, tilt_lat_deg, tilt_cra_deg, depth_mm)")
        try:
            x = float(v)
        except (TypeError, ValueError) as exc:
            raise InputError(f"move.{k}: not a number ({v!r})") from exc
        if not math.isfinite(x) or abs(x) > 50.0:
            raise InputError(f"move.{k}: {v!r} is not a finite step of at most 50")
        out[k] = x
    return out


def _depth_clamp(depth_mm: float, planned_depth_mm: float) -> float:
    return min(max(depth_mm, DEPTH_MIN_MM), planned_depth_mm + OVERRUN_MAX_MM)


def _clamp(v: float, lim: float) -> float:
    return max(-lim, min(lim, v))


def _vec3(v, name: str) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected [x, y, z]") from exc
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise InputError(f"{name}: expected 3 finite numbers")
    return a


def placed_vs_planned_png(ct, planned, tip_mm: np.ndarray, axis: np.ndarray, title: str) -> bytes:
    """PNG (bytes): oblique slice of the preop CT through the planned screw (axial-like plane holding
    the axis), the planned screw outline (red) and the placed screw (cyan), PreopCT mm."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spine_nav.geometry import axial_perpendicular_frame
    from spine_nav.plan.render import oblique_slice

    d = planned.direction
    n, _m = axial_perpendicular_frame(d)
    mid = 0.5 * (planned.entry_mm + planned.target_mm)
    half_u = 0.5 * planned.depth_mm + 12.0
    img = oblique_slice(ct, mid, d, n, half_u, 20.0, pixel_mm=0.5)
    fig, ax = plt.subplots(figsize=(4.4, 2.6))
    ax.imshow(img, cmap="gray", vmin=-250, vmax=1250, origin="lower", extent=(-half_u, half_u, -20.0, 20.0))
    r = 0.5 * planned.diameter_mm

    def outline(entry, tip, colour, label):
        u = tip - entry
        a0, a1 = float(np.dot(entry - mid, d)), float(np.dot(tip - mid, d))
        b0, b1 = float(np.dot(entry - mid, n)), float(np.dot(tip - mid, n))
        ax.plot([a0, a1], [b0 - r, b1 - r], color=colour, lw=1.2, label=label)
        ax.plot([a0, a1], [b0 + r, b1 + r], color=colour, lw=1.2)
        ax.plot([a1], [b1], "x", color=colour, ms=6)
        return u

    outline(planned.entry_mm, planned.target_mm, "tab:red", "planned")
    u = np.asarray(axis, float) / np.linalg.norm(axis)
    outline(np.asarray(tip_mm) - planned.depth_mm * u, np.asarray(tip_mm), "cyan", "placed")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_xlabel("along the planned screw (mm)", fontsize=7)
    ax.tick_params(labelsize=6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
