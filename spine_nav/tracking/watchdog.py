"""Per-tool watchdog: age of the last sample, visibility, rate, counters -> OK / TRACKING_LOST.

A tool is ``TRACKING_LOST`` when its last sample is older than the timeout, when the tracker
reports it missing (STATUS code != OK for its device, or v2/v3 metadata ``TransformStatus`` not OK),
or before its first sample. Timeout = max(``timeout_ms``, ``timeout_periods`` x measured sample
period): 50 ms and 3 periods by default (equal at 60 Hz; a 10 Hz tracker gets 300 ms).
Ages are measured on the receiver's monotonic clock (the tracker's clock need not be synchronised).
A tool can also be LATCHED lost (:meth:`Watchdog.latch_lost`, e.g. a bumped reference array): it then
stays TRACKING_LOST with that reason, whatever samples arrive, until :meth:`Watchdog.clear_latch`.
"""
from __future__ import annotations

from dataclasses import dataclass

OK, TRACKING_LOST = 0, 1


@dataclass
class ToolHealthState:
    """What the watchdog says about one tool (times: s on the caller's monotonic clock; stamp: tracker s)."""

    tool: str
    device: str
    state: int = TRACKING_LOST
    reason: str = "no sample yet"
    visible: bool = False
    last_sample_stamp_s: float = 0.0
    last_receive_s: float | None = None
    sample_age_ms: float = float("inf")
    rate_hz: float = 0.0
    samples_received: int = 0
    samples_rejected: int = 0
    changed: bool = False

    @property
    def state_name(self) -> str:
        return "OK" if self.state == OK else "TRACKING_LOST"


class Watchdog:
    def __init__(self, tools: dict[str, str], timeout_ms: float = 50.0, timeout_periods: float = 3.0,
                 rate_smoothing: float = 0.05) -> None:
        """``tools``: tool name -> device name."""
        if timeout_ms <= 0 or timeout_periods <= 0:
            raise ValueError(f"watchdog: timeout_ms ({timeout_ms}) and timeout_periods ({timeout_periods}) must be > 0")
        self.timeout_ms, self.timeout_periods, self._alpha = float(timeout_ms), float(timeout_periods), rate_smoothing
        self.tools = {name: ToolHealthState(name, dev) for name, dev in tools.items()}
        self._period_s: dict[str, float] = {}
        self._missing_reason: dict[str, str] = {}
        self._latched_reason: dict[str, str] = {}

    def effective_timeout_ms(self, tool: str) -> float:
        period = self._period_s.get(tool)
        return max(self.timeout_ms, self.timeout_periods * period * 1e3) if period else self.timeout_ms

    def sample(self, tool: str, receive_s: float, stamp_s: float, visible: bool = True) -> None:
        h = self.tools[tool]
        if h.samples_received and stamp_s > h.last_sample_stamp_s:
            dt = stamp_s - h.last_sample_stamp_s
            p = self._period_s.get(tool)
            self._period_s[tool] = dt if p is None else (1 - self._alpha) * p + self._alpha * dt
        h.samples_received += 1
        h.last_sample_stamp_s, h.last_receive_s = stamp_s, receive_s
        if visible and h.visible and tool not in self._missing_reason:  # the 1 kHz case: nothing changes
            return
        self.set_visible(tool, visible, "tracker reports tool missing")

    def set_visible(self, tool: str, visible: bool, reason: str = "tracker reports tool missing") -> None:
        self.tools[tool].visible = bool(visible)
        if visible:
            self._missing_reason.pop(tool, None)
        else:
            self._missing_reason[tool] = reason

    def latch_lost(self, tool: str, reason: str) -> None:
        """Hold ``tool`` TRACKING_LOST with ``reason`` until :meth:`clear_latch` (samples do not clear it)."""
        self.tools[tool]  # KeyError for an unknown tool, like sample()
        self._latched_reason[tool] = reason

    def clear_latch(self, tool: str) -> bool:
        """Release a latch set by :meth:`latch_lost`; True when there was one."""
        return self._latched_reason.pop(tool, None) is not None

    def latched_reason(self, tool: str) -> str:
        return self._latched_reason.get(tool, "")

    def reject(self, tool: str) -> None:
        self.tools[tool].samples_rejected += 1

    def check(self, now_s: float) -> list[ToolHealthState]:
        """Judge every tool at ``now_s`` (receiver monotonic s); ``changed`` marks state transitions."""
        out = []
        for name, h in self.tools.items():
            prev = h.state
            p = self._period_s.get(name)
            h.rate_hz = 1.0 / p if p else 0.0
            if name in self._latched_reason:
                h.state, h.reason = TRACKING_LOST, self._latched_reason[name]
                h.sample_age_ms = float("inf") if h.last_receive_s is None else (now_s - h.last_receive_s) * 1e3
            elif h.last_receive_s is None:
                h.state, h.reason, h.sample_age_ms = TRACKING_LOST, "no sample yet", float("inf")
            else:
                h.sample_age_ms = (now_s - h.last_receive_s) * 1e3
                limit = self.effective_timeout_ms(name)
                if name in self._missing_reason:
                    h.state, h.reason = TRACKING_LOST, self._missing_reason[name]
                elif h.sample_age_ms > limit:
                    h.state, h.reason = TRACKING_LOST, f"sample age {h.sample_age_ms:.0f} ms > {limit:.0f} ms"
                else:
                    h.state, h.reason = OK, ""
            h.changed = h.state != prev
            out.append(h)
        return out
