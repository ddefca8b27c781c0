"""Robotic arm guide core (no ROS): model, kinematics, alignment IK, servo control, safety, hand-eye."""
