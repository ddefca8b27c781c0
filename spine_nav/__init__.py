"""spine_nav: image-guided, robot-assisted spine surgery on ROS 2 Jazzy.

Pure core sub-packages (no ROS import): geometry, plan, imaging, registration,
tracking, guard, arm, sim. ROS 2 nodes live in :mod:`spine_nav.nodes`; the
``spine-nav`` command line in :mod:`spine_nav.cli`.
"""
__version__ = "0.1.0"
