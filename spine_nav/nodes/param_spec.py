"""ROS parameters as dataclass fields: one place for a parameter's name, default, unit, range and meaning.

No rclpy here (the parameter-consistency test reads it without ROS); :mod:`spine_nav.nodes.parameters`
turns the specs into ``declare_parameter`` calls with a ``ParameterDescriptor``.

A dataclass field is a node parameter when its ``metadata`` has a ``description``. Optional keys:
    ``unit`` (str; also in the name: ``_mm``, ``_deg``, ``_s``), ``range`` ((low, high), inclusive,
    None = unbounded on that side; ROS refuses values outside it), ``read_only`` (default True: the node
    reads it when it configures; False only where a callback applies changes at run time),
    ``ros_name`` (the parameter's name where it differs from the field's), ``ros_default`` (the node's
    default where it deliberately differs from the pure core's; the description says why), ``none_value``
    (the ROS value standing for the field's None, e.g. 0 = off), ``site`` (True: a per-site value, e.g. a
    calibration or a port, that config/nodes.yaml sets for the deployment and may differ from the default).

Why not generate_parameter_library (PickNikRobotics): it generates the declaration code from its own YAML
at build time through ament (CMake, or the ``generate_parameter_module`` setup.py hook that imports
``generate_parameter_library_py``); that generator is a ROS apt/colcon package, not on PyPI, and this stack
installs ROS 2 Jazzy from pip wheels without colcon. Its YAML would also be a second source next to the
core dataclasses, which the ROS-free core uses itself.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Iterable


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: ``name`` as declared; ``field_name`` of the dataclass it fills."""

    name: str
    field_name: str
    default: Any
    description: str
    unit: str = ""
    range: tuple[float | None, float | None] | None = None
    read_only: bool = True
    none_value: Any = None
    site: bool = False

    @property
    def ros_default(self) -> Any:
        """The default as ROS takes it (tuples -> lists, ints in float lists -> floats)."""
        if isinstance(self.default, (tuple, list)):
            return [float(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in self.default]
        return self.default


def param(default: Any, description: str, unit: str = "", range: tuple | None = None, **extra: Any):
    """A dataclass field that is also a ROS parameter (see the module doc for ``extra`` keys)."""
    meta = {"description": description, "unit": unit, "range": range, **extra}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


#: ``only`` value: every field of the dataclass is a parameter (its docstring describes them)
ALL_FIELDS = "*"


def param_specs(cls: type, only: Iterable[str] | str | None = None, prefix: str = "") -> list[ParamSpec]:
    """The ROS parameters of dataclass ``cls``: fields with a description (``only``: these field names;
    :data:`ALL_FIELDS`: every field, described by the class docstring), named ``prefix`` + name."""
    keep = set(only) if only is not None and only != ALL_FIELDS else None
    out = []
    for f in fields(cls):
        md = dict(f.metadata)
        if only == ALL_FIELDS or (keep is not None and f.name in keep):
            md.setdefault("description", f"{cls.__name__}.{f.name} (see its docstring)")
        if "description" not in md or (keep is not None and f.name not in keep):
            continue
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)  # type: ignore[misc]
        if "ros_default" in md:
            default = md["ros_default"]
        elif default is None:
            default = md.get("none_value")
        out.append(ParamSpec(name=prefix + md.get("ros_name", f.name), field_name=f.name, default=default,
                             description=md["description"], unit=md.get("unit", ""), range=md.get("range"),
                             read_only=md.get("read_only", True), none_value=md.get("none_value"),
                             site=bool(md.get("site", False))))
    return out


def check_value(spec: ParamSpec, value: Any, who: str = "") -> Any:
    """``value`` for ``spec`` (ints -> float for float parameters); ValueError naming the parameter."""
    where = f"{who}: parameter {spec.name}" if who else f"parameter {spec.name}"
    if isinstance(spec.default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if spec.range is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = spec.range
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"{where}={value!r} outside [{lo}, {hi}] {spec.unit}".rstrip())
    return value


def build(cls: type, values: dict[str, Any], only: Iterable[str] | str | None = None, prefix: str = "", **more: Any):
    """``cls(**fields)`` from ROS parameter ``values`` (by ROS name); ``none_value`` -> None; ``more`` added."""
    kw = {}
    for s in param_specs(cls, only, prefix):
        v = values[s.name]
        if s.none_value is not None and v == s.none_value:
            v = None
        elif isinstance(s.default, tuple):
            v = tuple(v)
        kw[s.field_name] = v
    return cls(**kw, **more)
