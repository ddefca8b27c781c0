"""Whole-case recordings as rosbag2 bags in MCAP storage (see docs/recordings.md).

No rclpy: :mod:`.definitions` (message definitions embedded in the bag), :mod:`.topics` (what the
stack publishes), :mod:`.writer` (MCAP writer fed with serialized CDR), :mod:`.reader` (reading, also of
truncated bags). On the ROS boundary: :mod:`.check` (re-running the trajectory guard over a bag, with
:mod:`spine_nav.nodes.conversions`) and :mod:`.recorder` (the recorder and player nodes behind
``spine-nav bag``). So the package sits above :mod:`spine_nav.nodes` (docs/architecture.md).
"""
