"""Imaging (no ROS): volume I/O, the synthetic spine phantom, bone quality."""
from spine_nav.imaging.volume import Volume, VolumeError  # noqa: F401
from spine_nav.imaging.volume_io import load_volume, save_volume  # noqa: F401
