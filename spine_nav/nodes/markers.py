"""RViz markers of the guard (visualization_msgs): planned corridors coloured by state, the tool axis.

Shared plumbing (no math: points come from the guard core in mm and become metres through
:func:`spine_nav.nodes.conversions.point_mm_to_msg`).
"""
from __future__ import annotations

from builtin_interfaces.msg import Duration
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from spine_nav.guard import GuardState
from spine_nav.guard.metrics import axis_segment_mm
from spine_nav.nodes.conversions import point_mm_to_msg

#: Marker colours (r, g, b, a) by state of the active screw; inactive screws grey, not navigable dark red.
STATE_COLOURS = {
    GuardState.ALIGNED: (0.1, 0.8, 0.2, 0.9), GuardState.WARN: (1.0, 0.8, 0.0, 0.9),
    GuardState.VIOLATION: (0.9, 0.1, 0.1, 0.9), GuardState.APPROACH: (0.2, 0.5, 1.0, 0.8),
    GuardState.TRACKING_LOST: (0.6, 0.0, 0.6, 0.8), GuardState.NO_PLAN: (0.5, 0.5, 0.5, 0.5),
}
INACTIVE_COLOUR = (0.6, 0.6, 0.6, 0.4)
NOT_NAVIGABLE_COLOUR = (0.4, 0.0, 0.0, 0.4)
TOOL_AXIS_COLOUR = (1.0, 1.0, 1.0, 1.0)
TOOL_AXIS_LENGTH_MM = 150.0


def colour(rgba: tuple[float, float, float, float]) -> ColorRGBA:
    return ColorRGBA(r=rgba[0], g=rgba[1], b=rgba[2], a=rgba[3])


def line_marker(frame_id: str, ns: str, idx: int, points_mm) -> Marker:
    """A LINE_LIST marker through ``points_mm`` (pairs), pose identity, 1 s lifetime."""
    mk = Marker(ns=ns, id=idx, type=Marker.LINE_LIST, action=Marker.ADD, lifetime=Duration(sec=1))
    mk.header.frame_id = frame_id
    mk.pose.orientation.w = 1.0
    mk.points = [point_mm_to_msg(p) for p in points_mm]
    return mk


class GuardMarkers:
    """Builds the guard's MarkerArray. The corridor points are built once per plan (building 20 Marker
    messages each tick took ~2.4 ms of the executor thread at 10 Hz, which showed as the guard's p99
    latency in `bench guard`); each tick only recolours them when the state or the active screw changed."""

    def __init__(self, frame_id: str) -> None:
        self.frame_id = frame_id
        self._corridors = None  # (segments it was built from, corridor Marker, (state, active id) it is coloured for)

    def build(self, segments, state: GuardState, active: str | None, width_m: float, tip_axis, stamp) -> MarkerArray:
        """``segments``: the selector's ScrewSegments; ``tip_axis``: (tip, axis) in mm or None."""
        arr = MarkerArray()
        screws = segments.screws
        if screws:
            if self._corridors is None or self._corridors[0] is not segments:
                mk = line_marker(self.frame_id, "planned_corridors", 0, [p for g in screws for p in (g.entry, g.target)])
                self._corridors = (segments, mk, None)
            _, mk, coloured_for = self._corridors
            if coloured_for != (state, active):
                mk.colors = [c for g in screws for c in 2 * [colour(STATE_COLOURS[state] if g.screw_id == active
                                                                    else INACTIVE_COLOUR if g.navigable
                                                                    else NOT_NAVIGABLE_COLOUR)]]
                self._corridors = (segments, mk, (state, active))
            mk.scale.x = width_m
            mk.header.stamp = stamp
            arr.markers.append(mk)
        if tip_axis is not None:
            mk = line_marker(self.frame_id, "tool_axis", 0, axis_segment_mm(*tip_axis, length_mm=TOOL_AXIS_LENGTH_MM))
            mk.colors = 2 * [colour(TOOL_AXIS_COLOUR)]
            mk.scale.x = 1.0 / 1000.0
            mk.header.stamp = stamp
            arr.markers.append(mk)
        return arr
