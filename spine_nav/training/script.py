"""Scripted attempts (no ROS): timed tool poses, one JSON object per line.

Each line: ``{"t_s": float >= 0, "screw_id": str, "tip_mm": [x, y, z], "axis": [ux, uy, uz]}`` with
``tip_mm`` and ``axis`` (direction of the shaft toward the tip, normalised here) in the frame of the
case's ``plan.json`` (PreopCT, LPS mm). ``t_s`` is seconds from the start of the attempt and never
goes back. Blank lines and lines starting with ``#`` are skipped. The screw ends at its last line
(the tool's pose there is the placed screw); a screw's lines are consecutive.

:func:`to_reference` maps each sample into Reference through the case's registration, as the tracked
tool would appear to the navigation system.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class ScriptError(ValueError):
    """A bad scripted attempt (message names the file and the line)."""


@dataclass(frozen=True)
class ScriptSample:
    t_s: float
    screw_id: str
    tip_mm: tuple[float, float, float]    # PreopCT
    axis: tuple[float, float, float]      # PreopCT, unit, toward the tip


def _vec(value, where: str, name: str) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ScriptError(f"{where}: {name} must be a list of 3 numbers, got {value!r}")
    try:
        v = tuple(float(x) for x in value)
    except (TypeError, ValueError) as exc:
        raise ScriptError(f"{where}: {name} must be a list of 3 numbers, got {value!r}") from exc
    if not all(math.isfinite(x) for x in v):
        raise ScriptError(f"{where}: {name} must be finite, got {value!r}")
    return v  # type: ignore[return-value]


def parse_script(text: str, source: str = "script") -> list[ScriptSample]:
    """Parse the jsonl text; raises ScriptError naming ``source:line``."""
    out: list[ScriptSample] = []
    seen_done: set[str] = set()
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{i}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ScriptError(f"{where}: not JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise ScriptError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        missing = [k for k in ("t_s", "screw_id", "tip_mm", "axis") if k not in obj]
        if missing:
            raise ScriptError(f"{where}: missing {', '.join(missing)}")
        try:
            t = float(obj["t_s"])
        except (TypeError, ValueError) as exc:
            raise ScriptError(f"{where}: t_s must be a number, got {obj['t_s']!r}") from exc
        if not math.isfinite(t) or t < 0:
            raise ScriptError(f"{where}: t_s must be finite and >= 0, got {obj['t_s']!r}")
        if out and t < out[-1].t_s:
            raise ScriptError(f"{where}: t_s {t:g} goes back in time (previous {out[-1].t_s:g})")
        sid = obj["screw_id"]
        if not isinstance(sid, str) or not sid:
            raise ScriptError(f"{where}: screw_id must be a non-empty string, got {sid!r}")
        if out and out[-1].screw_id != sid:
            seen_done.add(out[-1].screw_id)
        if sid in seen_done:
            raise ScriptError(f"{where}: screw {sid} was already ended earlier in the script (lines of a screw "
                              "must be consecutive)")
        tip = _vec(obj["tip_mm"], where, "tip_mm")
        axis = _vec(obj["axis"], where, "axis")
        n = math.sqrt(sum(a * a for a in axis))
        if n < 1e-9:
            raise ScriptError(f"{where}: axis must not be the zero vector")
        out.append(ScriptSample(t, sid, tip, tuple(a / n for a in axis)))  # type: ignore[arg-type]
    if not out:
        raise ScriptError(f"{source}: no samples")
    return out


def load_script(path: str | Path) -> list[ScriptSample]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ScriptError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    return parse_script(text, str(p))


def check_against_case(samples: list[ScriptSample], case) -> None:
    """Every screw id of the script is in the case's plan and its level is registered."""
    ids = set(case.plan.ids)
    for s in samples:
        if s.screw_id not in ids:
            raise ScriptError(f"script: screw_id {s.screw_id!r} is not in the case's plan "
                              f"(have {', '.join(case.plan.ids)})")
    for sid in {s.screw_id for s in samples}:
        lv = case.plan.screw(sid).level
        if lv not in case.T_reference_preop:
            raise ScriptError(f"script: screw {sid}: level {lv} has no registration ({case.registration_source})")


def to_reference(sample: ScriptSample, case) -> np.ndarray:
    """T_reference_tooltip (4x4 mm) of the sample through the case's registration of its screw's level."""
    return case.preop_to_reference(case.plan.screw(sample.screw_id).level, sample.tip_mm, sample.axis)


def straight_attempt(case, screw_ids, lateral_mm: float = 0.0, rate_hz: float = 50.0,
                     approach_mm: float = 20.0, speed_mm_s: float = 15.0, dwell_s: float = 0.5) -> list[dict]:
    """A scripted attempt (list of line dicts) that drives each screw straight down a line parallel to the
    plan, offset ``lateral_mm`` laterally (:func:`lateral_unit`; negative: medially), from ``approach_mm`` above the entry to the planned depth.
    Used by tests, the docs and ``spine-nav train --demo-script``."""
    lines: list[dict] = []
    t = 0.0
    for sid in screw_ids:
        s = case.plan.screw(sid)
        d = s.direction
        side = lateral_unit(case.plan, s)
        n = max(2, int((approach_mm + s.depth_mm) / speed_mm_s * rate_hz))
        for k in range(n + 1):
            depth = -approach_mm + (approach_mm + s.depth_mm) * k / n
            tip = s.entry_mm + depth * d + lateral_mm * side
            lines.append({"t_s": round(t, 4), "screw_id": sid, "tip_mm": [float(x) for x in tip],
                          "axis": [float(x) for x in d]})
            t += 1.0 / rate_hz
        t += dwell_s
        tip = s.entry_mm + s.depth_mm * d + lateral_mm * side
        lines.append({"t_s": round(t, 4), "screw_id": sid, "tip_mm": [float(x) for x in tip],
                      "axis": [float(x) for x in d]})
        t += 0.3
    return lines


def lateral_unit(plan, screw) -> np.ndarray:
    """Unit vector (plan frame) perpendicular to the screw and to the cranio-caudal axis (LPS z), pointing
    away from the midline of its level (the mean entry of the level's screws; for a lone screw, away from
    the side its tip converges to)."""
    d = screw.direction
    side = np.cross(d, [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    entries = [s.entry_mm for s in plan.screws_at(screw.level)]
    mid = np.mean(entries, axis=0) if len(entries) > 1 else screw.target_mm
    away = screw.entry_mm - mid
    return side if float(np.dot(side, away)) >= 0 else -side
