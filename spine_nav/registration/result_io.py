"""result.json (schema ``spine_nav.registration_result`` v1) and the registered plan file.

``levels`` maps level name -> {``status``: accepted|overridden|failed (overridden = accepted by an
explicit operator override although the gate refused it; listed again in ``overridden_levels``), ``reason``, ``preop_to_cbct``
(4x4 rows, T_cbct_preop in mm, present ONLY when accepted), quality figures (see
:class:`~spine_nav.registration.gate.LevelQuality`), ``time_s``}. Files are written
atomically and never overwrite an existing file unless asked.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from spine_nav.plan import save_plan, write_text_safely
from spine_nav.registration.pipeline import CaseRegistration

SCHEMA = "spine_nav.registration_result"
SCHEMA_VERSION = 1


def result_to_dict(result: CaseRegistration, inputs: dict[str, str] | None = None) -> dict[str, Any]:
    levels: dict[str, Any] = {}
    for lv, r in result.levels.items():
        status = ("overridden" if r.quality.overridden else "accepted") if r.accepted else "failed"
        entry: dict[str, Any] = {"status": status, "reason": r.reason}
        if r.accepted and r.T_cbct_preop is not None:
            entry["preop_to_cbct"] = [[float(v) for v in row] for row in r.T_cbct_preop]
        entry.update(r.quality.as_dict())
        entry["time_s"] = round(r.time_s, 4)
        levels[lv] = entry
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "transform": "preop_to_cbct = T_cbct_preop: PreopCT LPS mm -> CBCT/Reference LPS mm",
        "frame": result.frame,
        "all_accepted": result.all_accepted,
        "inputs": dict(inputs or {}),
        "levels": levels,
        "not_navigable": dict(result.not_navigable),
        "timings_s": {k: round(v, 4) for k, v in result.timings_s.items()},
        "overridden_levels": [lv for lv, r in result.levels.items() if r.quality.overridden],
        "cbct_quality": dict(result.cbct_quality),
        "preop_quality": dict(result.preop_quality),
    }


def output_paths(result_path: str | os.PathLike[str], levels: list[str]) -> dict[str, Path]:
    """Files written next to result.json: the registered plan and one overlay PNG per level."""
    p = Path(result_path)
    out = {"result": p, "registered_plan": p.with_name(f"{p.stem}.registered_plan.json")}
    for lv in levels:
        out[f"overlay_{lv}"] = p.with_name(f"{p.stem}.overlay_{lv}.png")
    return out


def check_outputs_free(result_path: str | os.PathLike[str], levels: list[str], overwrite: bool) -> None:
    """Raise FileExistsError naming the first output that exists (before any work is done)."""
    if overwrite:
        return
    for path in output_paths(result_path, levels).values():
        if path.exists():
            raise FileExistsError(f"{path}: already exists; refusing to overwrite (use --force)")


def save_result(result: CaseRegistration, path: str | os.PathLike[str], inputs: dict[str, str] | None = None,
                overwrite: bool = False) -> dict[str, Path]:
    """Write result.json and the registered plan (accepted levels only, frame Reference) next to it."""
    paths = output_paths(path, list(result.levels))
    data = result_to_dict(result, inputs)
    data["registered_plan"] = paths["registered_plan"].name
    save_plan(result.registered_plan, paths["registered_plan"], overwrite=overwrite)
    write_text_safely(paths["result"], json.dumps(data, indent=2) + "\n", overwrite=overwrite)
    return {"result": paths["result"], "registered_plan": paths["registered_plan"]}


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a result.json (plain dict; ``preop_to_cbct`` as nested lists)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a registration result (schema {data.get('schema')!r})")
    return data
