"""Test set-up shared by the whole suite.

* Each pytest session gets its own ROS_DOMAIN_ID and localhost-only discovery,
  so parallel runs on one machine never hear each other.
* Plots render offscreen (Agg); MuJoCo renders offscreen.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(20 + os.getpid() % 200))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture
def ros_context():
    """A fresh rclpy Context, initialised for one test and shut down after it."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    if ctx.ok():
        rclpy.shutdown(context=ctx)

