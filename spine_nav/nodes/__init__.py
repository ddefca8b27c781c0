"""Thin ROS 2 nodes: parse parameters, convert messages, call the core, publish. No math here.

Unit conversion (mm in the core, m on topics) happens only in :mod:`spine_nav.nodes.conversions`.
"""
