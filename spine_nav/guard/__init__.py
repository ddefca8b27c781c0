"""Trajectory guard (no ROS): live deviation of the tool from the planned screw, graded states.

* :mod:`~spine_nav.guard.metrics`: the quantities (definitions + sketch), plain-math fast path.
* :mod:`~spine_nav.guard.state`: states, hysteresis latches, debounce (the safety rules).
* :mod:`~spine_nav.guard.selection`: active screw (explicit / automatic nearest with hysteresis).
* :mod:`~spine_nav.guard.config`: thresholds, validated.
* :mod:`~spine_nav.guard.core`: :class:`TrajectoryGuard`, one verdict per tool sample.
"""
from spine_nav.guard.config import GuardConfig, GuardConfigError  # noqa: F401
from spine_nav.guard.core import GuardVerdict, TrajectoryGuard  # noqa: F401
from spine_nav.guard.metrics import (  # noqa: F401
    GuardMetrics,
    PoseError,
    ScrewGeometry,
    compute_metrics,
    compute_metrics_numpy,
    tip_and_axis,
)
from spine_nav.guard.selection import ScrewSelector, SegmentSet  # noqa: F401
from spine_nav.guard.state import IMMEDIATE_STATES, Debounce, GuardState, Latch  # noqa: F401
