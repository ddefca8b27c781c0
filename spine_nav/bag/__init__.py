"""Whole-case recordings as rosbag2 bags in MCAP storage (see docs/recordings.md).

Pure core (no rclpy): :mod:`.definitions` (message definitions embedded in the bag), :mod:`.topics`
(what the stack publishes), :mod:`.writer` (MCAP writer fed with serialized CDR), :mod:`.reader`
(reading, also of truncated bags), :mod:`.check` (re-running the trajectory guard over a bag).
The ROS side is :mod:`spine_nav.nodes.bag_recorder` and ``spine-nav bag``.
"""
