"""The end-to-end simulated case behind `spine-nav demo` (issue #8).

Pure parts (placement errors, report writing) have no ROS import; :mod:`spine_nav.demo.run`
orchestrates the real stack (OpenIGTLink over TCP, ROS 2 nodes over DDS, the MuJoCo arm).
"""
