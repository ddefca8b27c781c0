"""Tracking: OpenIGTLink codec and transport, tool composition, watchdog, pivot calibration, record/replay.

Pure core (no ROS). Matrices are 4x4 in mm; ``T_tracker_stylus`` is PLUS ``StylusToTracker``.
"""
