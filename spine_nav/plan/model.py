"""Planned pedicle screws: the contract between the surgeon and the robot.

Domain objects (pure Python/numpy, no ROS):

* :class:`Screw`: one planned screw, in the frame of its plan (PreopCT LPS, mm,
  unless the plan says otherwise).
* :class:`Plan`: an ordered collection of screws with the frame they are in.

Trajectory geometry (written once here)::

        entry_mm  o----------------------------->o  target_mm
                  |<------- depth_mm ----------->|
                  direction = (target - entry) / |target - entry|

``depth_mm`` (= |target - entry|) is the planned insertion depth from the
entry point along ``direction``; the screw's own ``length_mm`` is reported but
the trajectory is defined by the two points.

Validation raises :class:`PlanError` (a ValueError) whose message names the
field path (``screws[3].entry_mm``) and the reason.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

import numpy as np

from spine_nav.geometry import transform_points, validate_transform

#: Vertebral levels the plan model knows (cervical, thoracic, lumbar incl. a transitional L6, sacral).
KNOWN_LEVELS: tuple[str, ...] = (
    tuple(f"C{i}" for i in range(1, 8))
    + tuple(f"T{i}" for i in range(1, 13))
    + tuple(f"L{i}" for i in range(1, 7))
    + ("S1", "S2")
)
SIDES: tuple[str, ...] = ("left", "right")

#: Plausible ranges for pedicle screws (mm). Wider than adult lumbar (5.5-7.5 x 40-55)
#: so that thoracic and paediatric plans load; anything outside is a typo, not a plan.
DIAMETER_RANGE_MM = (3.0, 10.0)
LENGTH_RANGE_MM = (20.0, 100.0)
#: A planned trajectory shorter than this is not a trajectory (entry ~ target).
MIN_TRAJECTORY_MM = 5.0

_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


class PlanError(ValueError):
    """A plan (or one of its screws) is invalid; the message names the field and why."""


def _vec3(value: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise PlanError(f"{where}: expected 3 numbers [x, y, z], got {value!r}") from None
    if arr.shape != (3,):
        raise PlanError(f"{where}: expected 3 numbers [x, y, z], got {value!r}")
    if not np.all(np.isfinite(arr)):
        raise PlanError(f"{where}: coordinates must be finite, got {arr.tolist()}")
    return arr


def _number(value: Any, where: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise PlanError(f"{where}: expected a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise PlanError(f"{where}: must be finite, got {x}")
    if not lo <= x <= hi:
        raise PlanError(f"{where}: {x:g} mm is outside the plausible range {lo:g}-{hi:g} mm")
    return x


@dataclass(frozen=True)
class Screw:
    """One planned pedicle screw.

    Attributes:
        id: unique name, conventionally ``f"{level}_{side}"`` (e.g. ``L4_left``).
        level: vertebral level (``L4``); must be in :data:`KNOWN_LEVELS`.
        side: ``left`` or ``right`` (patient's).
        entry_mm: entry point on the bone surface, in the plan's frame (mm).
        target_mm: end point of the trajectory (screw tip), same frame (mm).
        diameter_mm, length_mm: screw size (mm).
    """

    id: str
    level: str
    side: str
    entry_mm: np.ndarray
    target_mm: np.ndarray
    diameter_mm: float
    length_mm: float

    def __post_init__(self) -> None:
        where = f"screw {self.id!r}" if isinstance(self.id, str) else "screw"
        if not isinstance(self.id, str) or not _ID_RE.match(self.id):
            raise PlanError(f"{where}.id: must be a non-empty name of letters, digits, _ . -, got {self.id!r}")
        if self.level not in KNOWN_LEVELS:
            raise PlanError(f"{where}.level: unknown vertebral level {self.level!r}")
        if self.side not in SIDES:
            raise PlanError(f"{where}.side: must be 'left' or 'right', got {self.side!r}")
        entry = _vec3(self.entry_mm, f"{where}.entry_mm")
        target = _vec3(self.target_mm, f"{where}.target_mm")
        depth = float(np.linalg.norm(target - entry))
        if depth < MIN_TRAJECTORY_MM:
            raise PlanError(
                f"{where}.target_mm: only {depth:.2f} mm from entry_mm (entry and target must differ "
                f"by at least {MIN_TRAJECTORY_MM:g} mm)"
            )
        entry.setflags(write=False)
        target.setflags(write=False)
        object.__setattr__(self, "entry_mm", entry)
        object.__setattr__(self, "target_mm", target)
        object.__setattr__(self, "diameter_mm",
                           _number(self.diameter_mm, f"{where}.diameter_mm", *DIAMETER_RANGE_MM))
        object.__setattr__(self, "length_mm",
                           _number(self.length_mm, f"{where}.length_mm", *LENGTH_RANGE_MM))

    @property
    def depth_mm(self) -> float:
        """Planned insertion depth |target - entry| in mm."""
        return float(np.linalg.norm(self.target_mm - self.entry_mm))

    @property
    def direction(self) -> np.ndarray:
        """Unit vector from entry to target (in the plan's frame)."""
        d = self.target_mm - self.entry_mm
        return d / np.linalg.norm(d)

    def transformed(self, T_new_old: np.ndarray) -> "Screw":
        """This screw with entry/target mapped by ``T_new_old`` (rigid, mm)."""
        T = validate_transform(T_new_old, "T_new_old")
        pts = transform_points(T, np.stack([self.entry_mm, self.target_mm]))
        return replace(self, entry_mm=pts[0], target_mm=pts[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "level": self.level,
            "side": self.side,
            "entry_mm": [float(v) for v in self.entry_mm],
            "target_mm": [float(v) for v in self.target_mm],
            "diameter_mm": float(self.diameter_mm),
            "length_mm": float(self.length_mm),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "screw") -> "Screw":
        if not isinstance(data, Mapping):
            raise PlanError(f"{where}: expected an object, got {type(data).__name__}")
        missing = [k for k in ("id", "level", "side", "entry_mm", "target_mm", "diameter_mm", "length_mm")
                   if k not in data]
        if missing:
            raise PlanError(f"{where}: missing field(s) {', '.join(missing)}")
        try:
            return cls(
                id=data["id"], level=data["level"], side=data["side"],
                entry_mm=data["entry_mm"], target_mm=data["target_mm"],
                diameter_mm=data["diameter_mm"], length_mm=data["length_mm"],
            )
        except PlanError as exc:
            raise PlanError(f"{where}: {exc}") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Screw):
            return NotImplemented
        return (self.id, self.level, self.side, self.diameter_mm, self.length_mm) == (
            other.id, other.level, other.side, other.diameter_mm, other.length_mm
        ) and np.array_equal(self.entry_mm, other.entry_mm) and np.array_equal(self.target_mm, other.target_mm)

    def __hash__(self) -> int:
        return hash(self.id)


@dataclass(frozen=True)
class Plan:
    """Planned screws in one frame (``PreopCT`` LPS mm for a surgeon's plan).

    ``screws`` keeps the order the surgeon planned them in; ids are unique.
    """

    screws: tuple[Screw, ...]
    frame: str = "PreopCT"
    coordinate_system: str = "LPS"
    case_id: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        screws = tuple(self.screws)
        for i, s in enumerate(screws):
            if not isinstance(s, Screw):
                raise PlanError(f"screws[{i}]: expected a Screw, got {type(s).__name__}")
        seen: set[str] = set()
        for i, s in enumerate(screws):
            if s.id in seen:
                raise PlanError(f"screws[{i}].id: duplicate screw id {s.id!r}")
            seen.add(s.id)
        if self.coordinate_system not in ("LPS", "RAS"):
            raise PlanError(f"coordinate_system: must be 'LPS' or 'RAS', got {self.coordinate_system!r}")
        object.__setattr__(self, "screws", screws)

    def __len__(self) -> int:
        return len(self.screws)

    def __iter__(self):
        return iter(self.screws)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.screws]

    @property
    def levels(self) -> list[str]:
        """Levels in plan order, each once."""
        out: list[str] = []
        for s in self.screws:
            if s.level not in out:
                out.append(s.level)
        return out

    def screw(self, screw_id: str) -> Screw:
        for s in self.screws:
            if s.id == screw_id:
                return s
        raise KeyError(f"no screw {screw_id!r} in plan (have: {', '.join(self.ids) or 'none'})")

    def screws_at(self, level: str) -> list[Screw]:
        return [s for s in self.screws if s.level == level]

    def transformed_per_level(self, T_new_old_by_level: Mapping[str, np.ndarray],
                              frame: str) -> "Plan":
        """The plan with each screw mapped by its own level's transform.

        Screws whose level has no transform are left out (their level is not
        navigable); callers that need to report them compare ``levels``.
        """
        kept = [s.transformed(T_new_old_by_level[s.level]) for s in self.screws
                if s.level in T_new_old_by_level]
        return replace(self, screws=tuple(kept), frame=frame)

    def with_screws(self, screws: Iterable[Screw]) -> "Plan":
        return replace(self, screws=tuple(screws))

