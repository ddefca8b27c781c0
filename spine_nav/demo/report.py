"""The case report: report.json for machines, report.md + PNG plots for the surgeon's team.

report.json (keys other tools read; more may be added)::

    {
      "screws": [{"id", "entry_error_mm", "tip_error_mm", "angular_error_deg", "gr_grade",
                  "breach_mm", "time_to_align_s", "guard_events", "stops", "status"}],
      "latency": {"sample_to_status_p99_ms", "sample_to_command_p99_ms", ...,
                  "missing_records": {node: why its latency record is missing}},
      "duration_s": float,
      "faults": [{"name", "detected", "arm_held", "cause", "detail", "kind", "hold_after_ms", "recovered"}],
      "summary": {...},
      "rods": {"placed_screws": [...], "sides": {...}, ...}   # spine_nav.demo.rods
    }
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass
class ScrewResult:
    """Outcome of one planned screw in the simulated case."""

    id: str
    level: str
    status: str  # "placed", "skipped" (registration failed), "stopped" (arm held before completion)
    reason: str = ""
    entry_error_mm: float | None = None
    tip_error_mm: float | None = None
    angular_error_deg: float | None = None
    breach_mm: float | None = None
    gr_grade: str | None = None
    time_to_align_s: float | None = None
    guide_error_at_drill_mm: float | None = None   # true tube opening to the true planned line
    guide_error_at_drill_deg: float | None = None
    guard_events: list[dict[str, Any]] = field(default_factory=list)
    stops: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FaultResult:
    name: str
    detected: bool
    arm_held: bool
    cause: str
    detail: str = ""
    kind: str = ""                        # process faults: "kill:NODE" (spine_nav.demo.process_faults)
    hold_after_ms: float | None = None    # injection -> the arm holding (measured, monotonic clock)
    recovered: bool | None = None         # stack healthy again, arm resumed and re-aligned (None: not tried)


@dataclass
class CaseReport:
    screws: list[ScrewResult]
    latency: dict[str, float]
    duration_s: float
    faults: list[FaultResult] = field(default_factory=list)
    registration: dict[str, Any] = field(default_factory=dict)
    bone_quality: list[dict[str, Any]] = field(default_factory=list)
    case: dict[str, Any] = field(default_factory=dict)
    rods: dict[str, Any] = field(default_factory=dict)  # spine_nav.demo.rods.case_rods

    def summary(self) -> dict[str, Any]:
        placed = [s for s in self.screws if s.status == "placed"]

        def stat(key: str, fn) -> float | None:
            vals = [getattr(s, key) for s in placed if getattr(s, key) is not None]
            return float(fn(vals)) if vals else None

        return {
            "screws_planned": len(self.screws),
            "screws_placed": len(placed),
            "grade_a": sum(1 for s in placed if s.gr_grade == "A"),
            "mean_entry_error_mm": stat("entry_error_mm", np.mean),
            "mean_angular_error_deg": stat("angular_error_deg", np.mean),
            "max_tip_error_mm": stat("tip_error_mm", np.max),
            "mean_tip_error_mm": stat("tip_error_mm", np.mean),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "screws": [asdict(s) for s in self.screws],
            "latency": self.latency,
            "duration_s": self.duration_s,
            "faults": [asdict(f) for f in self.faults],
            "summary": self.summary(),
            "registration": self.registration,
            "bone_quality": self.bone_quality,
            "case": self.case,
            "rods": self.rods,
        }


def _fmt(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def summary_table(report: CaseReport) -> str:
    """Markdown table, one row per screw (also printed at the end of the demo)."""
    rows = ["| screw | status | entry error (mm) | tip error (mm) | angle error (deg) | GR grade | align (s) | stops |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in report.screws:
        stops = "; ".join(st.get("cause", "") for st in s.stops) or "—"
        rows.append(f"| {s.id} | {s.status}{(': ' + s.reason) if s.reason else ''} | {_fmt(s.entry_error_mm)} | "
                    f"{_fmt(s.tip_error_mm)} | {_fmt(s.angular_error_deg)} | {s.gr_grade or '—'} | "
                    f"{_fmt(s.time_to_align_s, 1)} | {stops} |")
    return "\n".join(rows)


def write_report(report: CaseReport, out_dir: Path, plots: Sequence[Path] = ()) -> tuple[Path, Path]:
    """Write report.json and report.md (linking ``plots``) into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2, default=_json_default) + "\n")
    s = report.summary()
    lines = [
        "# spine_nav simulated case report",
        "",
        f"Case: {report.case.get('description', '')}  ",
        f"Duration: {report.duration_s:.1f} s; screws placed {s['screws_placed']}/{s['screws_planned']}, "
        f"Gertzbein-Robbins grade A: {s['grade_a']}.",
        "",
        "## Screws",
        "",
        summary_table(report),
        "",
        f"Mean entry error {_fmt(s['mean_entry_error_mm'])} mm, mean angular error "
        f"{_fmt(s['mean_angular_error_deg'])} deg, max tip error {_fmt(s['max_tip_error_mm'])} mm.",
        "",
        "## Latency (tracker sample time ->)",
        "",
        "| path | p50 (ms) | p99 (ms) | samples |",
        "| --- | --- | --- | --- |",
    ]
    paths = {"guard": "the guard taking the sample in",
             "status": "**guard status published** (the guard's own record)",
             "command": "**arm command published** (the arm guide's own record)",
             "status_received": "guard status, received by the recorder (demo process)",
             "command_received": "arm command, received by the recorder (demo process)"}
    for key, label in paths.items():
        if report.latency.get(f"sample_to_{key}_p50_ms") is None and key not in ("status", "command"):
            continue
        count = report.latency.get(f"sample_to_{key}_count", 0)
        lines.append(f"| {label} | {_fmt(report.latency.get(f'sample_to_{key}_p50_ms'), 3)} | "
                     f"{_fmt(report.latency.get(f'sample_to_{key}_p99_ms'), 3)} | {count} |")
    for node, why in (report.latency.get("missing_records") or {}).items():
        lines += ["", f"**No latency figures from {node}**: {why}."]
    if report.latency.get("tracker_send_late_p50_ms") is not None:
        lines += ["", f"The simulated tracker stamps each frame when it transmits it; how late that was against its "
                      f"schedule (the simulator's own delay in its shared process, not counted above): p50 "
                      f"{_fmt(report.latency['tracker_send_late_p50_ms'], 3)} ms, p99 "
                      f"{_fmt(report.latency['tracker_send_late_p99_ms'], 3)} ms."]
    if report.faults:
        lines += ["", "## Injected faults", "", "| fault | detected | arm held | hold after (ms) | recovered | cause |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for f in report.faults:
            rec = "—" if f.recovered is None else "yes" if f.recovered else "NO"
            lines.append(f"| {f.name} | {'yes' if f.detected else 'NO'} | {'yes' if f.arm_held else 'NO'} | "
                         f"{_fmt(f.hold_after_ms, 1)} | {rec} | {f.cause} |")
    if report.registration:
        lines += ["", "## Registration", "", "| level | status | reason | TRE (mm) |", "| --- | --- | --- | --- |"]
        for level, r in report.registration.items():
            lines.append(f"| {level} | {r.get('status')} | {r.get('reason', '')} | {_fmt(r.get('tre_mm'))} |")
    if report.bone_quality:
        lines += ["", "## Bone quality along each screw", "", "| screw | mean HU | flags |", "| --- | --- | --- |"]
        for b in report.bone_quality:
            lines.append(f"| {b.get('id')} | {_fmt(b.get('mean_hu'), 0)} | {', '.join(b.get('flags', [])) or '—'} |")
    if report.rods:
        from spine_nav.demo.rods import rods_section

        lines += rods_section(report.rods)
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p.stem}]({p.name})" for p in plots]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def percentile_ms(values_s: Sequence[float], q: float) -> float | None:
    """q-th percentile of latencies given in seconds, in ms (None for no data)."""
    if not len(values_s):
        return None
    return float(np.percentile(np.asarray(values_s) * 1e3, q))


def floor_figures(floor_latency_s: list[float], stack_p99_ms: dict[str, float | None], arm_log) -> dict[str, Any]:
    """The demo's report keys (issue 17): the bare relay's sample -> publish() p50/p99 measured during the
    case (``floor_relay_*``), ``sample_to_<name>_p99_vs_floor`` for each of ``stack_p99_ms``, and
    ``servo_overrun_stops`` = arm holds for a control-cycle overrun in the arm process's log."""
    from spine_nav.arm.safety import StopCause

    p99 = round(float(np.percentile(floor_latency_s, 99)) * 1e3, 3) if len(floor_latency_s) else None
    out: dict[str, Any] = {
        "floor_relay_p50_ms": round(float(np.percentile(floor_latency_s, 50)) * 1e3, 3) if len(floor_latency_s) else None,
        "floor_relay_p99_ms": p99, "floor_relay_count": len(floor_latency_s)}
    for name, v in stack_p99_ms.items():
        out[f"sample_to_{name}_p99_vs_floor"] = round(v / p99, 3) if v is not None and p99 else None
    path = Path(arm_log)
    text = path.read_text(errors="replace") if path.is_file() else ""
    out["servo_overrun_stops"] = sum(1 for line in text.splitlines()
                                     if "arm HOLD" in line and StopCause.CYCLE_WATCHDOG.value in line)
    return out
