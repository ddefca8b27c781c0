"""Launch the spine_nav stack on a full ROS 2 install (`ros2 launch spine_nav spine_nav.launch.py`).

Reads the same config/stack.yaml (which nodes) and config/nodes.yaml (their
parameters) as `spine-nav up`, which is how the stack starts on machines with
ROS from wheels (no `ros2 launch` there).
"""
from pathlib import Path

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    config_dir = Path(get_package_share_directory("spine_nav")) / "config"
    stack = yaml.safe_load((config_dir / "stack.yaml").read_text())
    params_file = str(config_dir / stack["params_file"])
    return LaunchDescription([
        Node(package="spine_nav", executable=name, name=name, parameters=[params_file], output="screen")
        for name in stack["nodes"]
    ])
