"""OpenIGTLink output for 3D Slicer (OpenIGTLinkIF) and other consoles: tool tip, plan, guard state (no ROS).

Messages: the tool tip as TRANSFORM ``<tool_tip_name>`` (T_reference_tooltip, mm), the registered plan as
POINT ``PlanPoints`` + TRAJ ``PlanTrajectories`` (sent again to every console that connects), the guard's
state as STRING ``GuardState``. Poses and unchanged guard states go out at most ``rate_hz``; a changed
guard state at once. Everything leaves through one sender thread and a bounded queue, so a slow console
never stalls the caller (the tracker socket thread when composed in process); messages beyond the bound
are counted in ``dropped``, not queued.
"""
from __future__ import annotations

import queue
import threading
import time

import numpy as np

from spine_nav.plan import Plan
from spine_nav.tracking import codec
from spine_nav.tracking.transport import IgtlServer

QUEUE_DEPTH = 256
NAVIGABLE_RGBA, NOT_NAVIGABLE_RGBA = (0, 200, 0, 255), (200, 0, 0, 255)


def plan_messages(plan: Plan, not_navigable: dict[str, str], stamp_s: float) -> bytes:
    """POINT ``PlanPoints`` (entry and target per screw, mm) + TRAJ ``PlanTrajectories``; b"" for no screws."""
    names, pts, trajs = [], [], []
    for s in plan.screws:
        names += [f"{s.id}_entry", f"{s.id}_target"]
        pts += [list(s.entry_mm), list(s.target_mm)]
        ok = s.id not in not_navigable
        trajs.append({"name": s.id, "group": "navigable" if ok else "not navigable",
                      "entry_mm": tuple(s.entry_mm), "target_mm": tuple(s.target_mm),
                      "radius_mm": s.diameter_mm / 2.0, "rgba": NAVIGABLE_RGBA if ok else NOT_NAVIGABLE_RGBA})
    if not names:
        return b""
    return (codec.encode_point("PlanPoints", names, pts, stamp_s, group="Plan")
            + codec.encode_traj("PlanTrajectories", trajs, stamp_s))


class SlicerOutput:
    """An OpenIGTLink server that consoles connect to; :meth:`tool_tip`, :meth:`plan`, :meth:`guard_state`
    queue what they are sent. Thread-safe to call from any one thread per method."""

    def __init__(self, port: int, host: str = "0.0.0.0", allowed_peers: str | None = None, rate_hz: float = 30.0,
                 tool_tip_name: str = "StylusTipToReference") -> None:
        self.min_period_s = 1.0 / float(rate_hz)
        self.tool_tip_name = tool_tip_name
        self.dropped = 0
        self._q: queue.Queue[bytes] = queue.Queue(maxsize=QUEUE_DEPTH)
        self._plan_bytes = b""
        self._last_pose_s = 0.0
        self._last_guard: tuple[int | None, float] = (None, 0.0)
        self.server = IgtlServer(port, host=host, on_connect=self._connected, allowed_peers=allowed_peers)
        self._thread = threading.Thread(target=self._send_loop, name="console-out", daemon=True)

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> "SlicerOutput":
        self.server.start()
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            try:
                self._q.put(b"", timeout=1.0)  # b"" = stop
            except queue.Full:
                pass  # daemon thread; ends with the process
        self.server.close()

    def tool_tip_due(self) -> bool:
        """True (and the pose clock restarted) when a tool tip may go out now (at most ``rate_hz``)."""
        now = time.monotonic()
        if now - self._last_pose_s < self.min_period_s:
            return False
        self._last_pose_s = now
        return True

    def tool_tip(self, T_reference_tooltip_mm: np.ndarray, stamp_s: float) -> None:
        """Send the tool tip (call when :meth:`tool_tip_due`)."""
        self._send(codec.encode_transform(self.tool_tip_name, T_reference_tooltip_mm, stamp_s))

    def plan(self, plan: Plan, not_navigable: dict[str, str], stamp_s: float) -> None:
        self._plan_bytes = plan_messages(plan, not_navigable, stamp_s)
        if self._plan_bytes:
            self._send(self._plan_bytes)

    def guard_state(self, state: int, text: str, stamp_s: float) -> None:
        """STRING ``GuardState``: at once when ``state`` changed, else at most ``rate_hz``."""
        now = time.monotonic()
        if state == self._last_guard[0] and now - self._last_guard[1] < self.min_period_s:
            return
        self._last_guard = (state, now)
        self._send(codec.encode_string("GuardState", text, stamp_s))

    def _send(self, data: bytes) -> None:
        try:
            self._q.put_nowait(data)
        except queue.Full:
            self.dropped += 1

    def _send_loop(self) -> None:
        while True:
            data = self._q.get()
            if not data:
                return
            self.server.broadcast(data)

    def _connected(self, conn) -> None:
        if self._plan_bytes:
            conn.send(self._plan_bytes)
