"""The end-to-end simulated case behind `spine-nav demo` (issue #8).

Pure parts (report writing) have no ROS import (placement errors are :mod:`spine_nav.plan.placement`);
:mod:`spine_nav.demo.run` orchestrates the real stack (OpenIGTLink over TCP, ROS 2 nodes over DDS, the MuJoCo arm).
"""
