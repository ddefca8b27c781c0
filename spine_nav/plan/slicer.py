"""3D Slicer markups (``.mrk.json``) <-> :class:`~spine_nav.plan.model.Plan` (no ROS).

Each screw is a ``Line`` markup: control point 0 = entry, control point 1 = target,
``name`` = screw id (``L4_left``). ``coordinateSystem`` is honoured (``LPS`` or
``RAS``; Slicer's default for saved files is LPS); the plan is LPS after import.
Screw size and level travel in an extra ``spine_nav`` object per markup (Slicer
ignores unknown properties); when it is missing (a line drawn in Slicer), level
and side come from the name (``<level>_<side>``) and the size from the defaults
given to :func:`load_slicer_markups`.

Schema reference: Slicer's ``markups-schema-v1.0.3.json``.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from spine_nav.plan.io import ras_to_lps, write_text_safely
from spine_nav.plan.model import Plan, PlanError, Screw

MARKUPS_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                  "Resources/Schema/markups-schema-v1.0.3.json#")
_NAME_RE = re.compile(r"^(?P<level>[CTLS]\d{1,2})[_\- ](?P<side>left|right)$", re.IGNORECASE)


def plan_to_markups(plan: Plan, coordinate_system: str = "LPS") -> dict[str, Any]:
    """The markups JSON object of ``plan`` in ``coordinate_system`` (LPS or RAS)."""
    if coordinate_system not in ("LPS", "RAS"):
        raise PlanError(f"coordinateSystem must be 'LPS' or 'RAS', got {coordinate_system!r}")
    markups = []
    for s in plan.screws:
        pts = np.stack([s.entry_mm, s.target_mm])
        if coordinate_system == "RAS":
            pts = ras_to_lps(pts)  # the flip is its own inverse
        markups.append({
            "type": "Line", "coordinateSystem": coordinate_system, "coordinateUnits": "mm",
            "name": s.id, "locked": True, "labelFormat": "%N-%d",
            "controlPoints": [
                {"id": str(i + 1), "label": f"{s.id}-{'entry' if i == 0 else 'target'}",
                 "position": [float(v) for v in p], "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
                 "selected": True, "locked": True, "visibility": True, "positionStatus": "defined"}
                for i, p in enumerate(pts)
            ],
            "measurements": [{"name": "length", "enabled": True, "value": s.depth_mm, "units": "mm"}],
            "spine_nav": {"level": s.level, "side": s.side, "diameter_mm": s.diameter_mm,
                          "length_mm": s.length_mm, "frame": plan.frame},
        })
    return {"@schema": MARKUPS_SCHEMA, "markups": markups}


def save_slicer_markups(plan: Plan, path: str | os.PathLike[str], coordinate_system: str = "LPS",
                        overwrite: bool = False) -> Path:
    """Write ``plan`` as a ``.mrk.json`` file (refuses to overwrite unless asked)."""
    return write_text_safely(path, json.dumps(plan_to_markups(plan, coordinate_system), indent=2) + "\n",
                             overwrite=overwrite)


def markups_to_plan(data: Any, source: str = "markups", default_diameter_mm: float = 6.5,
                    default_length_mm: float | None = None, case_id: str = "") -> Plan:
    """Build an LPS :class:`Plan` from parsed markups JSON; errors name ``source`` and the field."""
    if not isinstance(data, dict) or not isinstance(data.get("markups"), list):
        raise PlanError(f"{source}: not a Slicer markups file (no 'markups' list)")
    screws = []
    for i, m in enumerate(data["markups"]):
        where = f"{source}: markups[{i}]"
        if not isinstance(m, dict):
            raise PlanError(f"{where}: expected an object")
        if m.get("type") != "Line":
            raise PlanError(f"{where}.type: screws are Line markups, got {m.get('type')!r}")
        cs = m.get("coordinateSystem", "LPS")
        if cs not in ("LPS", "RAS"):
            raise PlanError(f"{where}.coordinateSystem: must be 'LPS' or 'RAS', got {cs!r}")
        units = m.get("coordinateUnits", "mm")
        if units != "mm":
            raise PlanError(f"{where}.coordinateUnits: only mm is supported, got {units!r}")
        cps = m.get("controlPoints")
        if not isinstance(cps, list) or len(cps) != 2:
            raise PlanError(f"{where}.controlPoints: a screw line needs exactly 2 points (entry, target), "
                            f"got {len(cps) if isinstance(cps, list) else cps!r}")
        try:
            pts = np.asarray([cp["position"] for cp in cps], dtype=float)
        except (KeyError, TypeError, ValueError):
            raise PlanError(f"{where}.controlPoints: each point needs a 'position' [x, y, z]") from None
        if pts.shape != (2, 3):
            raise PlanError(f"{where}.controlPoints: positions must be [x, y, z]")
        if cs == "RAS":
            pts = ras_to_lps(pts)
        name = str(m.get("name", ""))
        extra = m.get("spine_nav") if isinstance(m.get("spine_nav"), dict) else {}
        match = _NAME_RE.match(name)
        level = extra.get("level") or (match.group("level").upper() if match else None)
        side = extra.get("side") or (match.group("side").lower() if match else None)
        if level is None or side is None:
            raise PlanError(f"{where}.name: {name!r} does not say level and side (name lines like 'L4_left')")
        length = extra.get("length_mm", default_length_mm)
        if length is None:
            length = round(float(np.linalg.norm(pts[1] - pts[0])))
        raw = {"id": name, "level": level, "side": side, "entry_mm": pts[0].tolist(), "target_mm": pts[1].tolist(),
               "diameter_mm": extra.get("diameter_mm", default_diameter_mm), "length_mm": length}
        screws.append(Screw.from_dict(raw, where=where))
    try:
        return Plan(screws=tuple(screws), frame="PreopCT", coordinate_system="LPS", case_id=case_id,
                    metadata={"source": source})
    except PlanError as exc:
        raise PlanError(f"{source}: {exc}") from None


def load_slicer_markups(path: str | os.PathLike[str], default_diameter_mm: float = 6.5,
                        default_length_mm: float | None = None) -> Plan:
    """Load a ``.mrk.json`` file as an LPS plan; raises PlanError naming the file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(f"{p}: markups file not found") from None
    except json.JSONDecodeError as exc:
        raise PlanError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{p}: cannot read markups file ({exc})") from None
    return markups_to_plan(data, source=str(p), default_diameter_mm=default_diameter_mm,
                           default_length_mm=default_length_mm)
