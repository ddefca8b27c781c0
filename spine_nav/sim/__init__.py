"""Simulators (pure core, no ROS): the MuJoCo arm and the synthetic tracker."""
