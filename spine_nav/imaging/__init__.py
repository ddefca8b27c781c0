"""Imaging (no ROS): volume I/O, the synthetic spine phantom, bone quality."""
from spine_nav.imaging.volume import Volume, VolumeError  # noqa: F401
