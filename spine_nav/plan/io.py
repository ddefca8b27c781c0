"""Plan files: spine_nav's JSON schema (version 1) with safe saving.

Schema ``spine_nav.plan`` version 1 (all coordinates in mm)::

    {
      "schema": "spine_nav.plan",
      "schema_version": 1,
      "frame": "PreopCT",            # frame of entry/target points
      "coordinate_system": "LPS",    # LPS (DICOM) or RAS; the core always works in LPS
      "case_id": "phantom-seed-1",
      "metadata": {...},             # free-form, kept on round trip
      "screws": [
        {"id": "L4_left", "level": "L4", "side": "left",
         "entry_mm": [x, y, z], "target_mm": [x, y, z],
         "diameter_mm": 6.5, "length_mm": 45.0}
      ]
    }

A RAS plan is converted to LPS once on load (x and y negated). Saving never
overwrites an existing file unless ``overwrite=True`` and writes atomically
(temp file + rename), so an interrupted save cannot corrupt a plan.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from spine_nav.plan.model import Plan, PlanError, Screw

SCHEMA = "spine_nav.plan"
SCHEMA_VERSION = 1

#: LPS <-> RAS is a diagonal flip of x and y (its own inverse).
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def ras_to_lps(point: Any) -> np.ndarray:
    """Convert a point (or (N,3) points) between RAS and LPS (the map is its own inverse)."""
    return np.asarray(point, dtype=float) @ LPS_FROM_RAS.T


lps_to_ras = ras_to_lps


def plan_from_dict(data: Any, source: str = "plan") -> Plan:
    """Validate and build a :class:`Plan` from parsed JSON; errors name ``source`` and the field."""
    if not isinstance(data, dict):
        raise PlanError(f"{source}: top level must be a JSON object, got {type(data).__name__}")
    if "schema" in data and data["schema"] != SCHEMA:
        raise PlanError(f"{source}: schema is {data['schema']!r}, expected {SCHEMA!r}")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise PlanError(f"{source}: schema_version {version!r} is not supported (this build reads {SCHEMA_VERSION})")
    screws_raw = data.get("screws")
    if not isinstance(screws_raw, list):
        raise PlanError(f"{source}: 'screws' must be a list")
    cs = data.get("coordinate_system", "LPS")
    if cs not in ("LPS", "RAS"):
        raise PlanError(f"{source}: coordinate_system must be 'LPS' or 'RAS', got {cs!r}")
    screws = []
    for i, raw in enumerate(screws_raw):
        screw = Screw.from_dict(raw, where=f"{source}: screws[{i}]")
        if cs == "RAS":
            screw = Screw(screw.id, screw.level, screw.side, ras_to_lps(screw.entry_mm),
                          ras_to_lps(screw.target_mm), screw.diameter_mm, screw.length_mm)
        screws.append(screw)
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise PlanError(f"{source}: 'metadata' must be an object")
    try:
        return Plan(screws=tuple(screws), frame=str(data.get("frame", "PreopCT")), coordinate_system="LPS",
                    case_id=str(data.get("case_id", "")), metadata=metadata)
    except PlanError as exc:
        raise PlanError(f"{source}: {exc}") from None


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The JSON-ready dict of a plan (always LPS)."""
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "frame": plan.frame,
        "coordinate_system": "LPS",
        "case_id": plan.case_id,
        "metadata": dict(plan.metadata),
        "screws": [s.to_dict() for s in plan.screws],
    }


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Load a plan JSON file; raises PlanError naming the file on any problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(f"{p}: plan file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{p}: cannot read plan file ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    return plan_from_dict(data, source=str(p))


def write_text_safely(path: str | os.PathLike[str], text: str, overwrite: bool = False) -> Path:
    """Write ``text`` atomically; refuse to replace an existing file unless ``overwrite``.

    Raises FileExistsError naming the file, so recorded or planned data is never
    replaced by accident.
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p}: already exists; refusing to overwrite (pass overwrite=True / --force)")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def save_plan(plan: Plan, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Save ``plan`` as schema-v1 JSON (see module doc)."""
    return write_text_safely(path, json.dumps(plan_to_dict(plan), indent=2) + "\n", overwrite=overwrite)
