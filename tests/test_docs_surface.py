"""The ROS 2 surface tables in README.md and docs/ros-surface.md are what the code gives
(scripts/ros_surface.py builds every registered node and reads its topics, services and parameters)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "ros_surface.py"


def _module():
    spec = importlib.util.spec_from_file_location("ros_surface", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ros_surface"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.ros
@pytest.mark.slow
def test_committed_surface_tables_equal_the_generators_output():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, str(SCRIPT), "--check"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, (f"README.md / docs/ros-surface.md differ from the code: run "
                                 f"`python scripts/ros_surface.py`\n{res.stderr[-3000:]}")


def test_readme_table_goes_between_the_markers_only():
    mod = _module()
    readme = f"head\n{mod.BEGIN}\nold table\n{mod.END}\ntail\n"
    assert mod.readme_with_table(readme, "| new |") == f"head\n{mod.BEGIN}\n| new |\n{mod.END}\ntail\n"
    with pytest.raises(ValueError, match="markers"):
        mod.readme_with_table("no markers here", "| new |")


def test_surface_rendering_lists_every_endpoint_and_parameter():
    mod = _module()
    s = mod.NodeSurface("trajectory_guard", publishes=[mod.Endpoint("guard/status", "spine_nav_interfaces/GuardStatus",
                                                                    "STATUS_QOS")],
                        subscribes=[mod.Endpoint("tracking/tool_tip", "geometry_msgs/PoseStamped", "SENSOR_QOS")],
                        services=[mod.Endpoint("guard/select_screw", "spine_nav_interfaces/SelectScrew")],
                        parameters=[mod.Param("warn_lateral_mm", 1.0, "WARN above this", "mm", "1e-06 .. inf")])
    table = mod.readme_table([s])
    assert "| `trajectory_guard` | `guard/status` | `tracking/tool_tip` | `guard/select_screw` |" in table
    page = mod.doc_page([s])
    assert "| `guard/status` | spine_nav_interfaces/GuardStatus | trajectory_guard | STATUS_QOS |  |  |" in page
    assert "| `tracking/tool_tip` | geometry_msgs/PoseStamped |  |  | trajectory_guard | SENSOR_QOS |" in page
    assert "| `warn_lateral_mm` | `1.0` | mm | 1e-06 .. inf | WARN above this |" in page
