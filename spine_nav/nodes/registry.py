"""Every ROS 2 node of spine_nav: name -> (module, class). Console scripts in setup.py match these names."""
from __future__ import annotations

import importlib

#: node name -> "module:Class". The module also has ``main()`` (its console script).
NODES: dict[str, str] = {
    "plan_publisher": "spine_nav.nodes.plan_publisher:PlanPublisherNode",
    "registration": "spine_nav.nodes.registration:RegistrationNode",
    "arm_guide": "spine_nav.nodes.arm_guide:ArmGuideNode",
    "sim_arm": "spine_nav.nodes.sim_arm:SimArmNode",
    "tracker_bridge": "spine_nav.nodes.tracker_bridge:TrackerBridgeNode",
    "sim_tracker": "spine_nav.nodes.sim_tracker:SimTrackerNode",
    "trajectory_guard": "spine_nav.nodes.trajectory_guard:TrajectoryGuardNode",
    "console_bridge": "spine_nav.nodes.console_bridge:ConsoleBridgeNode",
    "command_source": "spine_nav.nodes.command_source:CommandSourceNode",
    "slicer_output": "spine_nav.nodes.slicer_output:SlicerOutputNode",
}


def node_class(name: str):
    """Import and return the node class registered under ``name`` (KeyError names the known ones)."""
    try:
        target = NODES[name]
    except KeyError:
        raise KeyError(f"unknown node {name!r} (known: {', '.join(sorted(NODES))})") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)
