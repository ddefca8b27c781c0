"""The package is a real ament_python package: package.xml and setup.py agree, every script imports."""
from __future__ import annotations

import ast
import importlib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def node_scripts() -> dict:
    tree = ast.parse((REPO / "setup.py").read_text())
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "NODE_SCRIPTS":
            return ast.literal_eval(n.value)
    raise AssertionError("setup.py has no NODE_SCRIPTS")


def test_package_xml_matches_setup_py():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("export/build_type") == "ament_python"
    import importlib.metadata as md

    meta = md.metadata("spine_nav")  # what setup.py produced (editable install)
    assert meta["Name"].replace("-", "_") == root.findtext("name") == "spine_nav"
    assert meta["Version"] == root.findtext("version")
    assert meta["License"] == root.findtext("license")
    import spine_nav

    assert spine_nav.__version__ == meta["Version"]
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "geometry_msgs", "spine_nav_interfaces"} <= deps
    assert (REPO / "resource" / "spine_nav").is_file()


def test_interface_package_versions_agree():
    root = ET.parse(REPO / "spine_nav_interfaces" / "package.xml").getroot()
    assert root.findtext("export/build_type") == "ament_cmake"
    assert root.find("member_of_group").text == "rosidl_interface_packages"


def test_every_console_script_imports():
    import importlib.metadata as md

    eps = {ep.name: ep.value for ep in md.entry_points(group="console_scripts")
           if ep.value.startswith("spine_nav.")}
    assert "spine-nav" in eps
    for name, target in node_scripts().items():
        assert eps.get(name) == target, f"console script {name} not installed as {target} (re-run make setup)"
    for name, target in eps.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name


def test_node_registry_matches_console_scripts():
    from spine_nav.nodes.registry import NODES, node_class

    assert set(NODES) == set(node_scripts())
    for name in NODES:
        cls = node_class(name)
        assert importlib.import_module(cls.__module__).main


def test_stack_config_names_registered_nodes():
    from spine_nav.nodes.registry import NODES
    from spine_nav.nodes.runner import load_stack_config

    cfg = load_stack_config(REPO / "config" / "stack.yaml")
    assert set(cfg["nodes"]) <= set(NODES)
    assert Path(cfg["params_file"]).is_file()


@pytest.mark.parametrize("pkg", ["geometry", "plan", "imaging", "registration", "tracking", "guard", "arm"])
def test_core_packages_do_not_import_ros(pkg):
    """The pure core must stay importable and testable without ROS."""
    root = REPO / "spine_nav" / pkg
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                assert top not in {"rclpy", "spine_nav_interfaces", "geometry_msgs", "sensor_msgs",
                                   "std_msgs", "diagnostic_msgs", "visualization_msgs", "trajectory_msgs",
                                   "builtin_interfaces"} and not n.startswith("spine_nav.nodes"), \
                    f"{path.relative_to(REPO)} imports {n}: core modules must not import ROS"
