"""Liveness of the arm guide's safety-relevant inputs (pure core, clock injected).

Each watched input is a *heartbeat*: a stream its producer publishes at least every few ms even when
nothing changes, so its silence means the producer (or the link to it) is gone, not that it has
nothing to say. The arm guide holds when a watched heartbeat has been silent for longer than its
timeout while it is guiding (ALIGNING/TRACKING), with the input's own stop cause, and refuses
``align``/``resume`` while one is silent.

Two kinds of inputs:

- ``always`` (e.g. the tracker bridge's ``tracking/health``, published every
  ``health_publish_period_ms`` even without tracker data): watched from the start; never heard = silent.
- ``registered`` (the command source, e.g. the console that sends align/resume): watched only once the
  source has announced itself (its first heartbeat registers it) and until it withdraws explicitly
  (a clean shutdown); a headless stack without a console is never held for its absence.

A timeout of ``None`` (or <= 0) turns the check off. Times are the controller's (monotonic s).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from spine_nav.arm.safety import StopCause, StopEvent


@dataclass
class Heartbeat:
    """One watched input: its stop cause, timeout (ms), and what was heard."""

    name: str                      # the topic / input, named in the stop detail
    cause: StopCause
    timeout_ms: float | None
    registered_only: bool = False  # True: watched only while a source is registered (command source)
    heard_s: float | None = None
    source: str = ""               # registered source's name ("" = none registered)

    @property
    def active(self) -> bool:
        return (self.timeout_ms is not None and self.timeout_ms > 0
                and (not self.registered_only or bool(self.source)))

    def silence(self, t_s: float) -> str:
        """Why this input counts as silent at ``t_s`` ("" when heard recently, inactive or off)."""
        if not self.active:
            return ""
        who = f"{self.name} ({self.source})" if self.source else self.name
        if self.heard_s is None:
            return f"no {who} received yet"
        age_ms = (t_s - self.heard_s) * 1e3
        return f"no {who} for {age_ms:.0f} ms > {self.timeout_ms:g} ms" if age_ms > self.timeout_ms else ""


class Liveness:
    """The set of watched heartbeats. Not thread-safe by itself: the controller calls it under its lock."""

    def __init__(self) -> None:
        self.inputs: dict[str, Heartbeat] = {}

    def watch(self, key: str, name: str, cause: StopCause, timeout_ms: float | None,
              registered_only: bool = False) -> None:
        self.inputs[key] = Heartbeat(name, cause, timeout_ms if timeout_ms and timeout_ms > 0 else None,
                                     registered_only)

    def heard(self, key: str, t_s: float, source: str | None = None) -> None:
        """A heartbeat of ``key`` at ``t_s``; ``source`` (registered inputs): non-empty registers that
        source (or keeps it), empty withdraws it (no longer watched). Unknown keys are ignored."""
        hb = self.inputs.get(key)
        if hb is None:
            return
        if source is not None:
            hb.source = source
        hb.heard_s = t_s

    def check(self, t_s: float) -> StopEvent | None:
        """The first silent input as a stop event (None: all alive or off)."""
        for hb in self.inputs.values():
            why = hb.silence(t_s)
            if why:
                return StopEvent(t_s, hb.cause, why)
        return None

    def registered(self, key: str) -> str:
        hb = self.inputs.get(key)
        return hb.source if hb is not None else ""


#: GapStats counts the gaps above each of these (ms): around the heartbeat timeouts (config 50 ms, the demo's 70 ms)
GAP_EDGES_MS = (30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 100.0)


@dataclass
class GapStats:
    """Gaps between consecutive heartbeats of one input as the arm guide heard them while guiding (ms): how
    many, the largest, and how many exceeded each of :data:`GAP_EDGES_MS`. What a heartbeat timeout must
    cover; published on /diagnostics (``spine_nav.nodes.diagnostics.arm_status``) for the demo's numbers."""

    n: int = 0
    max_ms: float = 0.0
    above: list[int] = field(default_factory=lambda: [0] * len(GAP_EDGES_MS))

    def add(self, gap_ms: float) -> None:
        self.n += 1
        self.max_ms = max(self.max_ms, gap_ms)
        for i, edge in enumerate(GAP_EDGES_MS):
            if gap_ms > edge:
                self.above[i] += 1

    def summary(self) -> str:
        """e.g. ``"n=1200 max=41.3 >30:5 >40:1 >50:0 ..."``."""
        return f"n={self.n} max={self.max_ms:.1f} " + " ".join(
            f">{edge:g}:{k}" for edge, k in zip(GAP_EDGES_MS, self.above))
