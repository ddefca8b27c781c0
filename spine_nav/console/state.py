"""Console state: the latest value of every stream the page shows, and the training results.

Everything here is JSON-ready (dicts of floats/strings), in millimetres and degrees, frame
``Reference`` unless a dict says otherwise. The ROS bridge converts messages into these dicts
(metres -> mm happens in ``spine_nav.nodes.conversions``); the server pushes them to pages.

Update kinds (the ``t`` field of every message sent to a page):

* ``plan``: ``{frame, case_id, screws: [{id, level, side, entry_mm, target_mm, diameter_mm,
  length_mm, navigable, status_reason}]}``
* ``tool``: ``{stamp_s, T_mm (16 floats, row-major T_reference_tooltip), frame}``; stamp_s is the
  tracker's own sample time (epoch seconds), carried to the page for the latency measurement.
* ``guard``: GuardStatus fields (``state_name``, ``active_screw_id``, ``lateral_error_mm``, ...,
  ``tool_sample_stamp_s``).
* ``arm``, ``health`` (per tool), ``levels`` (per level), ``diag`` (per diagnostic name).
* ``training``: ``{results: [...]}`` — per-screw results as screws complete (see below).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: Gertzbein-Robbins grades by breach distance (mm): A none, B < 2, C 2-4, D 4-6, E > 6.
GR_LIMITS_MM: tuple[tuple[str, float], ...] = (("B", 2.0), ("C", 4.0), ("D", 6.0))


def gertzbein_robbins_grade(breach_mm: float) -> str:
    """Gertzbein-Robbins grade for a cortical breach of ``breach_mm`` (0 or less: ``A``)."""
    if breach_mm <= 0.0:
        return "A"
    for grade, limit in GR_LIMITS_MM:
        if breach_mm < limit:
            return grade
    return "E"


@dataclass
class TrainingTracker:
    """Per-screw training results from the guard stream.

    A screw *completes* when the guard reports ``remaining_mm <= complete_within_mm`` for it
    (the tool reached the planned depth). Its result is the guard's numbers at that sample.
    The Gertzbein-Robbins grade needs a cortical breach, which the guard does not measure; the
    console uses the tip's lateral deviation beyond ``breach_tolerance_mm`` as the breach
    distance (a proxy, stated on the page) — ``breach_mm = max(0, lateral_error_mm - tolerance)``.
    """

    complete_within_mm: float = 0.5
    breach_tolerance_mm: float = 1.0
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def on_guard(self, g: dict[str, Any]) -> dict[str, Any] | None:
        """Feed one guard dict; returns the new result when a screw just completed, else None."""
        sid = g.get("active_screw_id") or ""
        if not sid or sid in self.results or g.get("state_name") in ("NO_PLAN", "TRACKING_LOST"):
            return None
        remaining = float(g.get("remaining_mm", float("inf")))
        lateral = float(g.get("lateral_error_mm", float("nan")))
        if not (math.isfinite(remaining) and math.isfinite(lateral)) or remaining > self.complete_within_mm:
            return None
        breach = max(0.0, lateral - self.breach_tolerance_mm)
        result = {
            "screw_id": sid,
            "lateral_error_mm": lateral,
            "angular_error_deg": float(g.get("angular_error_deg", 0.0)),
            "entry_offset_mm": float(g.get("entry_offset_mm", 0.0)),
            "depth_mm": float(g.get("depth_mm", 0.0)),
            "breach_proxy_mm": breach,
            "grade": gertzbein_robbins_grade(breach),
            "state_at_completion": g.get("state_name", ""),
        }
        self.results[sid] = result
        return result

    def as_update(self) -> dict[str, Any]:
        return {"t": "training", "results": list(self.results.values())}


@dataclass
class ConsoleState:
    """Latest value per stream, replayed to a page when it connects (so a new page is complete)."""

    case: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] | None = None
    tool: dict[str, Any] | None = None
    guard: dict[str, Any] | None = None
    arm: dict[str, Any] | None = None
    health: dict[str, dict[str, Any]] = field(default_factory=dict)
    levels: dict[str, dict[str, Any]] = field(default_factory=dict)
    diag: dict[str, dict[str, Any]] = field(default_factory=dict)
    training: TrainingTracker = field(default_factory=TrainingTracker)

    def apply(self, update: dict[str, Any]) -> list[dict[str, Any]]:
        """Record ``update`` (a dict with ``t``); returns the updates to push (it, plus derived ones)."""
        kind = update.get("t")
        out = [update]
        if kind == "plan":
            self.plan = update
        elif kind == "tool":
            self.tool = update
        elif kind == "guard":
            self.guard = update
            if self.training.on_guard(update) is not None:
                out.append(self.training.as_update())
        elif kind == "arm":
            self.arm = update
        elif kind == "health":
            self.health[str(update.get("tool", ""))] = update
        elif kind == "levels":
            self.levels[str(update.get("level", ""))] = update
        elif kind == "diag":
            self.diag[str(update.get("name", ""))] = update
        else:
            raise ValueError(f"unknown update kind {kind!r}")
        return out

    def snapshot(self) -> list[dict[str, Any]]:
        """Everything a newly connected page needs, oldest-first."""
        out: list[dict[str, Any]] = [{"t": "case", **self.case}]
        for item in (self.plan, self.arm, self.guard, self.tool):
            if item is not None:
                out.append(item)
        out.extend(self.health.values())
        out.extend(self.levels.values())
        out.extend(self.diag.values())
        out.append(self.training.as_update())
        return out
