"""Launch the spine_nav stack on a full ROS 2 install (`ros2 launch spine_nav spine_nav.launch.py`).

Reads the same config/stack.yaml (which nodes) and config/nodes.yaml (their
parameters) as `spine-nav up`, which is how the stack starts on machines with
ROS from wheels (no `ros2 launch` there).

Every node is its own process and is respawned when it dies (``respawn=True``,
``respawn_delay`` RESPAWN_DELAY_S), as `spine-nav up --respawn --split` does. Launch
does not tell the stack that a process died (no ``supervisor/process_lost``): on this
layout the arm guide's heartbeat watches (guard, bridge, console: docs/safety.md) and
the arm's own command watchdog are what hold the arm; `spine-nav up --respawn` adds
the immediate report.
"""
from pathlib import Path

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch_ros.actions import Node

#: seconds before a dead node is started again (launch's respawn_delay; `spine-nav up --respawn`
#: starts at the same 0.5 s and doubles it while the process keeps dying)
RESPAWN_DELAY_S = 0.5


def generate_launch_description() -> LaunchDescription:
    config_dir = Path(get_package_share_directory("spine_nav")) / "config"
    stack = yaml.safe_load((config_dir / "stack.yaml").read_text())
    params_file = str(config_dir / stack["params_file"])
    return LaunchDescription([
        Node(package="spine_nav", executable=name, name=name, parameters=[params_file], output="screen",
             respawn=True, respawn_delay=RESPAWN_DELAY_S)
        for name in stack["nodes"]
    ])
