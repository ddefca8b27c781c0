"""One attempt (no ROS): the trainee's tool stream and the guard's verdicts become graded screws in
the session store.

Input: tool poses ``T_reference_tooltip`` (4x4 mm, Reference) with the screw the trainee is working on
and the time since the attempt began (s); the guard's verdicts (state name, reason). A screw *ends*
when the trainee says so (:meth:`Attempt.end_screw`; a script ends it at its last line, the page with
its "end screw" key). The placed screw is the tool's pose at that moment, graded by
:meth:`spine_nav.training.case.TrainingCase.grade` (:mod:`spine_nav.training.grading`, the demo's
grading). Per screw also: time to place (first to last input of the screw, s), guard VIOLATIONs
(entries into VIOLATION while the screw was worked on) and depth-stop overruns (those VIOLATIONs whose
reason is the depth stop).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spine_nav.training.store import SessionStore, ToolSample


@dataclass
class _Screw:
    screw_id: str
    t_first_s: float
    t_last_s: float
    T_last: np.ndarray
    violations: int = 0
    depth_overruns: int = 0
    guard_states: list[str] = field(default_factory=list)


class Attempt:
    """Thread-safe (the page's inputs and the guard's verdicts arrive on different threads)."""

    def __init__(self, case, store: SessionStore, attempt_id: int, flush_every: int = 100) -> None:
        self.case, self.store, self.attempt_id = case, store, attempt_id
        self.flush_every = flush_every
        self._lock = threading.RLock()
        self._pending: list[ToolSample] = []
        self._current: _Screw | None = None
        self._last_guard_state = ""
        self.results: list[dict[str, Any]] = []
        self.closed = False

    @property
    def current_screw(self) -> str | None:
        with self._lock:
            return self._current.screw_id if self._current else None

    def input(self, t_s: float, screw_id: str, T_reference_tooltip: np.ndarray) -> dict[str, Any] | None:
        """A tool pose; returns the graded previous screw when ``screw_id`` starts a new one."""
        T = np.asarray(T_reference_tooltip, dtype=float)
        ended = None
        with self._lock:
            if self._current is not None and self._current.screw_id != screw_id:
                ended = self.end_screw()
            if self._current is None:
                self.case.screw(screw_id)  # CaseError for an unknown screw
                self._current = _Screw(screw_id, t_s, t_s, T)
            self._current.t_last_s, self._current.T_last = t_s, T
            self._pending.append(ToolSample(t_s, screw_id, tuple(T[:3, 3]), tuple(T[:3, 2])))
            if len(self._pending) >= self.flush_every:
                self.flush()
        return ended

    def guard(self, state: str, reason: str = "", active_screw_id: str | None = None) -> None:
        """A guard verdict (any thread); one about another screw than the one being worked on (the guard
        still on the previous screw, or choosing by itself) is not counted."""
        with self._lock:
            cur = self._current
            if cur is not None and active_screw_id not in (None, "") and active_screw_id != cur.screw_id:
                return
            if cur is not None:
                if state == "VIOLATION" and self._last_guard_state != "VIOLATION":
                    cur.violations += 1
                    if reason.startswith("depth_mm"):
                        cur.depth_overruns += 1
                if not cur.guard_states or cur.guard_states[-1] != state:
                    cur.guard_states.append(state)
            self._last_guard_state = state

    def end_screw(self) -> dict[str, Any] | None:
        """Grade the screw being worked on at the tool's last pose and keep it; None when there is none."""
        with self._lock:
            cur = self._current
            if cur is None:
                return None
            self._current = None
            self.flush()
            g = self.case.grade(cur.screw_id, cur.T_last)
            res = {**g.to_dict(), "status": "placed", "time_to_place_s": cur.t_last_s - cur.t_first_s,
                   "guard_violations": cur.violations, "depth_overruns": cur.depth_overruns,
                   "guard_states": cur.guard_states}
            tip, axis = cur.T_last[:3, 3], cur.T_last[:3, 2]
            res["id"] = self.store.add_screw(self.attempt_id, res, tip, axis)
            res["tip_ref_mm"], res["axis_ref"] = [float(v) for v in tip], [float(v) for v in axis]
            self.results.append(res)
            return res

    def end_screw_discard(self) -> None:
        """The trainee left the screw without ending it (chose another): nothing graded; its tool stream stays."""
        with self._lock:
            self._current = None
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        self.store.add_samples(self.attempt_id, pending)

    def close(self, finished: bool) -> None:
        """Keep what is pending; ``finished`` marks the attempt finished, otherwise it stays unfinished
        (a screw still being worked on is not graded: the trainee never ended it)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self.flush()
            if finished:
                self.store.finish_attempt(self.attempt_id)
