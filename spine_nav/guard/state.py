"""Guard states, threshold latches with hysteresis, and the debounce (the safety core).

States (values equal the ``GuardStatus.STATE_*`` constants)::

    NO_PLAN        no plan, no active screw, or the active screw's level is not navigable
    TRACKING_LOST  tool not judged: tracker reports it lost/invisible, no sample for
                   stale_after_s (watchdog), sample older than stale_after_s, time going
                   backwards, non-finite or non-rigid pose (reason says which)
    APPROACH       tip farther than approach_distance_mm from the entry and before the
                   entry plane (depth < 0): corridor not judged yet
    ALIGNED        inside the corridor: lateral <= warn_lateral_mm and angle <= warn_angle_deg
    WARN           lateral > warn_lateral_mm or angle > warn_angle_deg
    VIOLATION      lateral > violation_lateral_mm or angle > violation_angle_deg (outside the
                   corridor), or depth > planned depth + depth_margin_mm (past the depth stop)

Decision for one sample, first rule that applies wins:

    1. input check fails / tracker health lost      -> TRACKING_LOST
    2. no plan / no active screw / not navigable    -> NO_PLAN
    3. depth-stop latch set                          -> VIOLATION   (also during APPROACH)
    4. approach latch set                            -> APPROACH
    5. violation latch (lateral or angle) set        -> VIOLATION
    6. warn latch (lateral or angle) set             -> WARN
    7. otherwise                                     -> ALIGNED

Hysteresis (every threshold is a latch, :class:`Latch`): a latch SETS as soon as its value
exceeds the threshold (``value > threshold``) and CLEARS only when the value has come back
below ``threshold - hysteresis`` (hysteresis_mm for lateral and depth, hysteresis_deg for
angle). So hysteresis only ever delays the way back to a less severe state, never the way in.
The approach latch sets when ``tip_to_entry > approach_distance_mm and depth < 0`` and
clears when ``tip_to_entry < approach_distance_mm - hysteresis_mm or depth >= 0``.
Latches are reset when the active screw changes.

Debounce (:class:`Debounce`): VIOLATION, TRACKING_LOST and NO_PLAN are published at once,
on the first sample that shows them, and so is any escalation from APPROACH/ALIGNED to
WARN. Every other change (WARN -> ALIGNED, APPROACH <-> ALIGNED, and any recovery out of
VIOLATION / TRACKING_LOST / NO_PLAN) is published only after the new state has been the
raw verdict continuously for ``debounce_s`` of sample time; until then the previous state
stays (with "pending" in the reason). So the debounce only ever delays the way back to a
less severe state, and a single good sample never clears a VIOLATION or a TRACKING_LOST.
"""
from __future__ import annotations

from enum import IntEnum


class GuardState(IntEnum):
    NO_PLAN = 0
    TRACKING_LOST = 1
    APPROACH = 2
    ALIGNED = 3
    WARN = 4
    VIOLATION = 5


#: States that are never delayed by the debounce.
IMMEDIATE_STATES = frozenset({GuardState.VIOLATION, GuardState.TRACKING_LOST, GuardState.NO_PLAN})


#: Severity among the debounced states: a rise is immediate, anything else is debounced.
_SEVERITY = {GuardState.APPROACH: 0, GuardState.ALIGNED: 0, GuardState.WARN: 1}


class Latch:
    """A threshold with hysteresis: set when ``value > on``, cleared when ``value < off``."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = False

    def update(self, value: float, on: float, off: float) -> bool:
        if self.active:
            if value < off:
                self.active = False
        elif value > on:
            self.active = True
        return self.active


class Debounce:
    """Publishes immediate states and escalations at once, others after ``debounce_s`` of persistence."""

    def __init__(self) -> None:
        self.state: GuardState | None = None
        self.pending: GuardState | None = None
        self.pending_since_s = 0.0

    def update(self, raw: GuardState, t_s: float, debounce_s: float) -> tuple[GuardState, bool]:
        """(published state, True when ``raw`` is still pending)."""
        if (self.state is None or raw in IMMEDIATE_STATES or raw == self.state
                or (self.state not in IMMEDIATE_STATES and _SEVERITY[raw] > _SEVERITY[self.state])):
            self.state, self.pending = raw, None
            return raw, False
        if raw != self.pending:
            self.pending, self.pending_since_s = raw, t_s
        if t_s - self.pending_since_s >= debounce_s - 1e-9:  # 1 ns: float sums of sample times
            self.state, self.pending = raw, None
            return raw, False
        return self.state, True
