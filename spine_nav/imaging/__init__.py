"""Imaging (no ROS): volumes and their I/O, cortical breach grading. The phantom is :mod:`spine_nav.phantom`."""
from spine_nav.imaging.volume import Volume, VolumeError  # noqa: F401
from spine_nav.imaging.volume_io import load_volume, save_volume  # noqa: F401
