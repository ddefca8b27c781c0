"""Guard thresholds and timing (validated). Units are in the names: mm, deg, s.

Defaults come from ``clinical-notes.md`` / the guard issue: WARN at 1 mm / 2 deg,
VIOLATION at 2 mm / 4 deg, depth margin 0 mm (the depth stop is exactly the
planned depth). Hysteresis and debounce are explained in :mod:`spine_nav.guard.state`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping


class GuardConfigError(ValueError):
    """A guard threshold is invalid; the message names the field and why."""


@dataclass(frozen=True)
class GuardConfig:
    """Everything the guard's verdict depends on besides the plan and the samples.

    Corridor (tip to planned line, tool axis vs planned direction):
        warn_lateral_mm, warn_angle_deg: ALIGNED -> WARN above these.
        violation_lateral_mm, violation_angle_deg: -> VIOLATION above these.
        depth_margin_mm: depth stop = planned depth |target - entry| + this margin.
    Hysteresis (a latched threshold clears only once the value is this far back below it):
        hysteresis_mm (lateral and depth), hysteresis_deg (angle).
    Zones:
        approach_distance_mm: tip farther than this from the entry point and not yet past
            the entry plane (depth < 0) -> APPROACH (corridor not judged yet).
        capture_radius_mm: automatic selection picks the nearest planned trajectory whose
            segment (entry..target) is within this distance of the tip.
        switch_margin_mm: automatic selection switches to another screw only if it is
            closer than the current one by more than this (and the current one is only
            kept while within capture_radius_mm + switch_margin_mm).
    Time:
        stale_after_s: a sample whose stamp is older than this when judged -> TRACKING_LOST;
            also the watchdog timeout (no sample for this long -> TRACKING_LOST).
        debounce_s: a change to a less severe state (WARN -> ALIGNED, APPROACH <-> ALIGNED,
            recovery from VIOLATION / TRACKING_LOST / NO_PLAN) takes effect only after the new
            state has been seen continuously for this long (sample time). Never applied to
            VIOLATION, TRACKING_LOST, NO_PLAN or an escalation to WARN.
    """

    # metadata: the trajectory_guard parameter each field is (spine_nav.nodes.param_spec), changeable at run time
    warn_lateral_mm: float = field(default=1.0, metadata={"unit": "mm", "range": (1e-6, None), "read_only": False,
        "description": "ALIGNED -> WARN above this tip-to-line distance"})
    warn_angle_deg: float = field(default=2.0, metadata={"unit": "deg", "range": (1e-6, 90.0), "read_only": False,
        "description": "ALIGNED -> WARN above this tool-axis angle"})
    violation_lateral_mm: float = field(default=2.0, metadata={"unit": "mm", "range": (1e-6, None), "read_only": False,
        "description": "VIOLATION above this tip-to-line distance"})
    violation_angle_deg: float = field(default=4.0, metadata={"unit": "deg", "range": (1e-6, 90.0), "read_only": False,
        "description": "VIOLATION above this tool-axis angle"})
    depth_margin_mm: float = field(default=0.0, metadata={"unit": "mm", "range": (0.0, None), "read_only": False,
        "description": "depth stop = planned depth + this"})
    hysteresis_mm: float = field(default=0.2, metadata={"unit": "mm", "range": (0.0, None), "read_only": False,
        "description": "a latched lateral/depth threshold clears this far back below it"})
    hysteresis_deg: float = field(default=0.4, metadata={"unit": "deg", "range": (0.0, None), "read_only": False,
        "description": "a latched angle threshold clears this far back below it"})
    approach_distance_mm: float = field(default=15.0, metadata={"unit": "mm", "range": (1e-6, None), "read_only": False,
        "description": "APPROACH: tip farther than this from the entry, before entry"})
    capture_radius_mm: float = field(default=30.0, metadata={"unit": "mm", "range": (1e-6, None), "read_only": False,
        "description": "automatic selection: nearest screw within this of the tip"})
    switch_margin_mm: float = field(default=2.0, metadata={"unit": "mm", "range": (0.0, None), "read_only": False,
        "description": "automatic selection switches only when closer by more than this"})
    stale_after_s: float = field(default=0.05, metadata={"unit": "s", "range": (1e-6, None), "read_only": False,
        "description": "sample age / no-sample watchdog -> TRACKING_LOST"})
    debounce_s: float = field(default=0.03, metadata={"unit": "s", "range": (0.0, None), "read_only": False,
        "description": "delay of the way back to a less severe state (sample time)"})

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise GuardConfigError(f"{f.name}: expected a number, got {v!r}")
            v = float(v)
            if not math.isfinite(v):
                raise GuardConfigError(f"{f.name}: must be finite, got {v}")
            object.__setattr__(self, f.name, v)
        for name in ("warn_lateral_mm", "warn_angle_deg", "violation_lateral_mm", "violation_angle_deg",
                     "approach_distance_mm", "capture_radius_mm", "stale_after_s"):
            if getattr(self, name) <= 0.0:
                raise GuardConfigError(f"{name}: must be > 0, got {getattr(self, name):g}")
        for name in ("depth_margin_mm", "hysteresis_mm", "hysteresis_deg", "switch_margin_mm", "debounce_s"):
            if getattr(self, name) < 0.0:
                raise GuardConfigError(f"{name}: must be >= 0, got {getattr(self, name):g}")
        if not self.warn_lateral_mm < self.violation_lateral_mm:
            raise GuardConfigError(f"warn_lateral_mm ({self.warn_lateral_mm:g}) must be < violation_lateral_mm "
                                   f"({self.violation_lateral_mm:g})")
        if not self.warn_angle_deg < self.violation_angle_deg:
            raise GuardConfigError(f"warn_angle_deg ({self.warn_angle_deg:g}) must be < violation_angle_deg "
                                   f"({self.violation_angle_deg:g})")
        if not self.hysteresis_mm < self.warn_lateral_mm:
            raise GuardConfigError(f"hysteresis_mm ({self.hysteresis_mm:g}) must be < warn_lateral_mm "
                                   f"({self.warn_lateral_mm:g})")
        if not self.hysteresis_deg < self.warn_angle_deg:
            raise GuardConfigError(f"hysteresis_deg ({self.hysteresis_deg:g}) must be < warn_angle_deg "
                                   f"({self.warn_angle_deg:g})")
        if not self.hysteresis_mm < self.approach_distance_mm:
            raise GuardConfigError(f"hysteresis_mm ({self.hysteresis_mm:g}) must be < approach_distance_mm "
                                   f"({self.approach_distance_mm:g})")
        if self.debounce_s >= self.stale_after_s * 100:
            raise GuardConfigError(f"debounce_s ({self.debounce_s:g}) is implausibly long")

    def updated(self, **changes: Any) -> "GuardConfig":
        """A validated copy with ``changes`` applied (raises GuardConfigError naming the field)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise GuardConfigError(f"unknown guard setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "GuardConfig":
        return cls().updated(**dict(data))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)
