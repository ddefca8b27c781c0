"""One source per parameter: config/nodes.yaml and the launch file carry exactly the code's parameters.

The code's side is the dataclasses of :data:`spine_nav.nodes.node_params.NODE_PARAMETERS` (no ROS needed).
config/nodes.yaml must list, node by node, exactly those names with exactly the defaults, except values the
code marks per-site (``site``: calibrations, ports), which only need the default's type. The launch file
starts config/stack.yaml's nodes with config/nodes.yaml (read from its source, not run: launch_ros is not in
the wheels). Then the descriptors: a range ROS enforces, read_only where nothing applies a change.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from spine_nav.nodes.node_params import NODE_PARAMETERS
from spine_nav.nodes.param_spec import check_value, param_specs
from spine_nav.nodes.registry import NODES

REPO = Path(__file__).resolve().parents[1]
NODES_YAML = yaml.safe_load((REPO / "config" / "nodes.yaml").read_text())


def specs(node: str):
    return [s for cls, only, *prefix in NODE_PARAMETERS[node] for s in param_specs(cls, only, *prefix)]


def flatten(d: dict, prefix: str = "") -> dict:
    """ROS's view of nested YAML parameters: {"gate": {"min_points": 3}} -> {"gate.min_points": 3}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return not isinstance(a, (bool, str)) and not isinstance(b, (bool, str)) and a == pytest.approx(b, abs=1e-12)
    return type(a) is type(b) and a == b


def test_every_node_has_its_parameters_in_code_and_in_nodes_yaml():
    assert set(NODE_PARAMETERS) == set(NODES), "a node without a parameter dataclass list"
    assert set(NODES_YAML) == set(NODES), "config/nodes.yaml sections != registered nodes"


@pytest.mark.parametrize("node", sorted(NODES))
def test_nodes_yaml_carries_exactly_the_code_parameters_and_defaults(node):
    code = {s.name: s for s in specs(node)}
    assert len(code) == len(specs(node)), f"{node}: a parameter declared twice"
    yml = flatten(NODES_YAML[node]["ros__parameters"])
    assert sorted(set(code) - set(yml)) == [], f"{node}: in the code, not in config/nodes.yaml"
    assert sorted(set(yml) - set(code)) == [], f"{node}: in config/nodes.yaml, not in the code"
    for name, spec in code.items():
        value = check_value(spec, yml[name], node)  # within the range the descriptor gives ROS
        if spec.site:  # a per-site value: the deployment's, of the default's type (and length)
            d = spec.ros_default
            assert type(value) is type(d) and (not isinstance(d, list) or len(value) == len(d)), \
                f"{node}.{name}: {value!r} not like the default {d!r}"
        else:
            assert same(value, spec.ros_default), f"{node}.{name}: config/nodes.yaml {value!r} != code {spec.ros_default!r}"


def test_the_drifted_default_has_one_value_now():
    """feedback_timeout_s was 0.05 in the node and config, 0.02 in ArmGuideConfig."""
    from spine_nav.arm.controller import ArmGuideConfig

    (spec,) = [s for s in specs("arm_guide") if s.name == "feedback_timeout_s"]
    assert spec.default == ArmGuideConfig().feedback_timeout_s == NODES_YAML["arm_guide"]["ros__parameters"][
        "feedback_timeout_s"] == 0.05


def test_launch_file_starts_the_stack_nodes_with_nodes_yaml():
    tree = ast.parse((REPO / "launch" / "spine_nav.launch.py").read_text())
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert {"stack.yaml", "params_file", "nodes", "spine_nav"} <= strings
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"]
    assert len(calls) == 1, "one Node action per stack node, from config/stack.yaml"
    kw = {k.arg for k in calls[0].keywords}
    assert {"executable", "name", "parameters"} <= kw  # parameters=[config/nodes.yaml], nothing inline
    assert not any(isinstance(n, ast.Dict) for n in ast.walk(calls[0])), "inline parameters in the launch file"
    stack = yaml.safe_load((REPO / "config" / "stack.yaml").read_text())
    assert stack["params_file"] == "nodes.yaml" and set(stack["nodes"]) <= set(NODES)


def test_descriptors_carry_description_unit_range_and_read_only():
    from rcl_interfaces.msg import ParameterType

    from spine_nav.nodes.parameters import descriptor

    (standoff,) = [s for s in specs("arm_guide") if s.name == "standoff_mm"]
    d = descriptor(standoff)
    assert d.type == ParameterType.PARAMETER_DOUBLE and d.read_only and "tube" in d.description
    assert d.additional_constraints == "unit: mm" and d.floating_point_range[0].to_value == 500.0
    (warn,) = [s for s in specs("trajectory_guard") if s.name == "warn_lateral_mm"]
    assert not descriptor(warn).read_only  # the guard applies changes at run time (on_set_parameters)
    (port,) = [s for s in specs("tracker_bridge") if s.name == "port"]
    assert descriptor(port).integer_range[0].to_value == 65535
    with pytest.raises(ValueError, match="standoff_mm"):
        check_value(standoff, -1.0, "arm_guide")


def test_ros_refuses_an_out_of_range_value_at_startup():
    """A bad value in the parameter file: the node does not start, and the error names the parameter."""
    from spine_nav.nodes.runner import ComposedStack

    with pytest.raises(ValueError, match="slicer_output: parameter rate_hz"):
        ComposedStack(["slicer_output"], params_file=REPO / "config" / "nodes.yaml",
                      extra_ros_args=["-p", "slicer_output:rate_hz:=-3.0", "-p", "slicer_output:port:=0"])
