"""Parameter helpers shared by the nodes: declaration, descriptor and validation from one source.

Every node parameter is a dataclass field (:mod:`spine_nav.nodes.param_spec`, the list per node in
:data:`spine_nav.nodes.node_params.NODE_PARAMETERS`): :func:`declare_node_parameters` declares them with a
``ParameterDescriptor`` (description, unit, FloatingPointRange / IntegerRange, read_only) so ROS itself
refuses out-of-range values (at start-up: a ValueError naming the parameter; at run time: the set fails).
"""
from __future__ import annotations

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import ParameterException
from rclpy.node import Node

from spine_nav.geometry import transform_from_quat, transform_to_quat
from spine_nav.nodes.node_params import NODE_PARAMETERS
from spine_nav.nodes.param_spec import ParamSpec, build, check_value, param_specs

_BIG_INT = 2 ** 62
_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
_ARRAY_TYPES = {bool: ParameterType.PARAMETER_BOOL_ARRAY, int: ParameterType.PARAMETER_INTEGER_ARRAY,
                float: ParameterType.PARAMETER_DOUBLE_ARRAY, str: ParameterType.PARAMETER_STRING_ARRAY}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ROS descriptor of ``spec``: type, description (+ unit), range, read_only."""
    d = spec.ros_default
    ptype = _ARRAY_TYPES[type(d[0])] if isinstance(d, list) else _TYPES[type(d)]
    desc = ParameterDescriptor(name=spec.name, type=ptype, description=spec.description,
                               additional_constraints=f"unit: {spec.unit}" if spec.unit else "",
                               read_only=spec.read_only)
    if spec.range is not None and ptype == ParameterType.PARAMETER_DOUBLE:
        lo, hi = spec.range
        desc.floating_point_range = [FloatingPointRange(from_value=float("-inf") if lo is None else float(lo),
                                                        to_value=float("inf") if hi is None else float(hi))]
    elif spec.range is not None and ptype == ParameterType.PARAMETER_INTEGER:
        lo, hi = spec.range
        desc.integer_range = [IntegerRange(from_value=-_BIG_INT if lo is None else int(lo),
                                           to_value=_BIG_INT if hi is None else int(hi), step=1)]
    return desc


def node_specs(node_name: str) -> list[ParamSpec]:
    return [s for cls, only, *prefix in NODE_PARAMETERS[node_name] for s in param_specs(cls, only, *prefix)]


def declare_node_parameters(node: Node, node_name: str | None = None) -> dict:
    """Declare every parameter of ``node_name`` (default: the node's name) with its descriptor; return
    name -> value. ValueError (one line, naming the node and the parameter) for a refused value."""
    who = node_name or node.get_name()
    values = {}
    for spec in node_specs(who):
        try:
            value = node.declare_parameter(spec.name, spec.ros_default, descriptor(spec)).value
        except ParameterException as exc:
            raise ValueError(f"{node.get_name()}: parameter {spec.name}: {exc}") from None
        values[spec.name] = check_value(spec, value, node.get_name())
    return values


def config_from(cls: type, values: dict, node_name: str, **more):
    """``cls`` built from the declared ``values`` (the fields NODE_PARAMETERS lists for ``node_name``)."""
    only, *prefix = next(rest for c, *rest in NODE_PARAMETERS[node_name] if c is cls)
    return build(cls, values, only, *prefix, **more)


def pose_from(values: dict, prefix: str, who: str) -> np.ndarray:
    """``<prefix>_xyz_mm`` + ``<prefix>_quat_xyzw`` from declared ``values`` -> 4x4 (mm); ValueError naming both."""
    xyz, quat = values[f"{prefix}_xyz_mm"], values[f"{prefix}_quat_xyzw"]
    try:
        return transform_from_quat(list(quat), list(xyz), order="xyzw")
    except ValueError as exc:
        raise ValueError(f"{who}: parameters {prefix}_xyz_mm={list(xyz)} / {prefix}_quat_xyzw={list(quat)}: "
                         f"{exc}") from None


def declare_pose_parameter(node: Node, prefix: str, default_T_mm: np.ndarray | None = None) -> np.ndarray:
    """Declare ``<prefix>_xyz_mm`` (float[3]) + ``<prefix>_quat_xyzw`` (float[4]) and return the 4x4 (mm).

    For nodes without a parameter dataclass (sim_tracker). ``prefix`` names the transform in the T_a_b
    convention, e.g. ``tracker_robotbase`` for T_tracker_robotbase. Raises ValueError naming both
    parameters when the values are not a rigid pose (wrong length, NaN, zero quaternion).
    """
    q0, t0 = transform_to_quat(np.eye(4) if default_T_mm is None else default_T_mm, order="xyzw")
    values = {f"{prefix}_xyz_mm": list(node.declare_parameter(f"{prefix}_xyz_mm", [float(x) for x in t0]).value),
              f"{prefix}_quat_xyzw": list(node.declare_parameter(f"{prefix}_quat_xyzw", [float(x) for x in q0]).value)}
    return pose_from(values, prefix, node.get_name())
