"""Bring your own arm: an :class:`~spine_nav.arm.model.ArmModel` from any URDF or xacro file (pure core).

:func:`load_description` reads a robot description someone else wrote (a path, or a file inside an
installed package's share folder), extracts the kinematic chain ``base_link -> flange_link`` and
writes a *normalised* URDF that the rest of spine_nav (Pinocchio, MuJoCo, the layout search, the
controller) already understands:

    RobotBase  = the robot's ``base_link``        (renamed; its pose is the robot base)
    <chain>    = the revolute/continuous joints on the path, with their origins, axes and limits,
                 the links in between with their inertials (no meshes: geometry is not needed for
                 kinematics or the servo simulation); fixed joints on the path are kept
    Flange     = the robot's ``flange_link``      (renamed)
    GuideTube  = tool mount ``T_flange_guidetube`` (guide axis +z, origin at the tube's distal opening)
    ArmMarker  = tool mount ``T_flange_armmarker`` (the tracker marker array on the flange)

so nobody edits the robot's URDF. Joints outside the chain (a gripper's fingers, a camera mount) are
ignored. ``continuous`` joints become revolute with +-360 deg unless overridden (the servo needs a
finite range). ``package://pkg/...`` and ``file://`` paths are only resolved for xacro includes
(through ``package_paths``: each is a folder holding ``pkg/`` or a ``share`` prefix holding ``pkg/``);
mesh references are dropped (not needed for the kinematics).

Units: URDF metres/radians inside the XML; tool mounts are given in mm (``T_flange_<tool>``, the
project's transform convention: maps tool coordinates to flange coordinates).

Every refusal is a ``ValueError`` with one line naming the file and the element.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import sysconfig
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from spine_nav.arm.model import (BASE_FRAME, FLANGE_FRAME, MARKER_FRAME, TUBE_FRAME, ArmModel, load_arm_model,
                                 parse_urdf)
from spine_nav.geometry import validate_transform

#: continuous joints get this range unless overridden (rad)
CONTINUOUS_RANGE_RAD = 2.0 * math.pi
#: fewer actuated joints cannot satisfy the 5 alignment constraints (position 3 + axis direction 2)
MIN_AXES = 5
#: links without <inertial> get a small mass so MuJoCo can simulate them (kg, kg m^2)
DEFAULT_MASS_KG = 0.1
DEFAULT_INERTIA_KG_M2 = 1e-4


@dataclass(frozen=True)
class ArmDescriptionConfig:
    """What to take from a robot description (all optional except the file and the two links)."""

    urdf: str | Path
    base_link: str
    flange_link: str
    T_flange_guidetube_mm: np.ndarray = field(default_factory=lambda: _translation_mm((0.0, 0.0, 100.0)))
    T_flange_armmarker_mm: np.ndarray = field(default_factory=lambda: _translation_mm((70.0, 0.0, 20.0)))
    package_paths: Sequence[str | Path] = ()
    #: joint name -> (lower_rad, upper_rad): overrides (or supplies) the URDF limits
    limit_overrides: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    xacro_args: Mapping[str, str] = field(default_factory=dict)


def _translation_mm(xyz) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = xyz
    return T


def tool_transform_mm(xyz_mm: Sequence[float], quat_xyzw: Sequence[float] | None = None,
                      rpy_rad: Sequence[float] | None = None, name: str = "tool") -> np.ndarray:
    """``T_flange_<tool>`` (4x4, mm) from a translation and a unit quaternion (x, y, z, w) or URDF
    roll-pitch-yaw (rad, fixed axes x then y then z). Refuses a quaternion that is not unit (1e-3)."""
    xyz = np.asarray(xyz_mm, dtype=float)
    if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
        raise ValueError(f"{name}: xyz_mm must be 3 finite numbers, got {list(xyz_mm)}")
    if quat_xyzw is not None and rpy_rad is not None:
        raise ValueError(f"{name}: give a quaternion or rpy, not both")
    T = np.eye(4)
    T[:3, 3] = xyz
    if quat_xyzw is not None:
        q = np.asarray(quat_xyzw, dtype=float)
        if q.shape != (4,) or not np.all(np.isfinite(q)):
            raise ValueError(f"{name}: quat_xyzw must be 4 finite numbers, got {list(quat_xyzw)}")
        n = float(np.linalg.norm(q))
        if abs(n - 1.0) > 1e-3:
            raise ValueError(f"{name}: quat_xyzw is not a unit quaternion (norm {n:.4f}): not a rigid transform")
        from scipy.spatial.transform import Rotation

        T[:3, :3] = Rotation.from_quat(q / n).as_matrix()
    elif rpy_rad is not None:
        T[:3, :3] = _rpy_matrix(rpy_rad)
    return T


def _rpy_matrix(rpy) -> np.ndarray:
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def _matrix_rpy(R: np.ndarray) -> tuple[float, float, float]:
    """URDF rpy of ``R`` (inverse of :func:`_rpy_matrix`)."""
    import warnings

    from scipy.spatial.transform import Rotation

    with warnings.catch_warnings():  # gimbal lock (pitch +-90 deg): any split of roll/yaw gives the same R
        warnings.simplefilter("ignore", UserWarning)
        r, p, y = Rotation.from_matrix(R).as_euler("xyz")  # extrinsic x, y, z = URDF rpy
    return float(r), float(p), float(y)


# ---------------------------------------------------------------------------- reading the file
def resolve_package_uri(uri: str, package_paths: Sequence[str | Path], source: Path) -> Path:
    """``package://pkg/rel`` -> a file found under one of ``package_paths`` (``DIR/pkg/rel`` or
    ``DIR/share/pkg/rel``), else under the ``AMENT_PREFIX_PATH`` shares. ``file://`` -> the path."""
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    if not uri.startswith("package://"):
        return (source.parent / uri).resolve()
    pkg, _, rel = uri[len("package://"):].partition("/")
    roots = [Path(p) for p in package_paths]
    roots += [Path(p) / "share" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    roots += [Path(sys.prefix) / "share", Path(sysconfig.get_paths()["purelib"]) / "cmeel.prefix" / "share"]
    for root in roots:
        for cand in (root / pkg / rel, root / "share" / pkg / rel):
            if cand.exists():
                return cand
    raise ValueError(f"{source}: {uri}: package {pkg!r} not found under --package-path "
                     f"{[str(r) for r in package_paths]} (or AMENT_PREFIX_PATH)")


def read_robot_xml(path: str | Path, package_paths: Sequence[str | Path] = (),
                   xacro_args: Mapping[str, str] | None = None) -> str:
    """URDF XML text of ``path`` (a file, or ``package://pkg/rel`` in an installed package's share folder:
    ``package_paths``, ``AMENT_PREFIX_PATH``, this Python's ``share`` and its pip-installed cmeel prefix
    (where e.g. ``example-robot-data`` installs); a ``.urdf`` read as is, a ``.xacro`` expanded; ``$(find pkg)`` and
    ``package://`` includes resolved through ``package_paths``)."""
    p = resolve_package_uri(str(path), package_paths, Path.cwd()) if str(path).startswith("package://") else Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: robot description not found")
    if p.suffix != ".xacro" and not p.name.endswith(".urdf.xacro"):
        try:
            return p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{p}: cannot read ({exc})") from None
    import xacro
    from xacro import substitution_args

    real_find = substitution_args._find

    def _find(resolved, a, args, context):  # $(find pkg) through the package paths
        try:
            return real_find(resolved, a, args, context)
        except Exception:
            return resolved.replace(f"$(find {args[0]})", str(resolve_package_uri(f"package://{args[0]}/", package_paths, p)).rstrip("/"))

    substitution_args._find = _find
    try:
        doc = xacro.process_file(str(p), mappings=dict(xacro_args or {}))
    except Exception as exc:  # xacro raises its own XacroException and xml errors
        raise ValueError(f"{p}: xacro expansion failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    finally:
        substitution_args._find = real_find
    return doc.toprettyxml(indent="  ")


# ---------------------------------------------------------------------------- the chain
@dataclass(frozen=True)
class _Joint:
    el: ET.Element
    name: str
    type: str
    parent: str
    child: str


def _chain(root: ET.Element, base: str, flange: str, src: str) -> list[_Joint]:
    links = {l.get("name") for l in root.findall("link")}
    for role, name in (("base_link", base), ("flange_link", flange)):
        if name not in links:
            raise ValueError(f"{src}: {role} {name!r}: no <link name={name!r}> in the description")
    by_child: dict[str, _Joint] = {}
    for j in root.findall("joint"):
        par, chi = j.find("parent"), j.find("child")
        if par is None or chi is None:
            raise ValueError(f"{src}: <joint name={j.get('name')!r}>: missing <parent> or <child>")
        by_child[chi.get("link")] = _Joint(j, j.get("name"), j.get("type"), par.get("link"), chi.get("link"))
    path: list[_Joint] = []
    link = flange
    while link != base:
        j = by_child.get(link)
        if j is None:
            raise ValueError(f"{src}: flange_link {flange!r} is not below base_link {base!r} "
                             f"(the chain ends at link {link!r})")
        path.append(j)
        link = j.parent
    return path[::-1]


def _origin(el: ET.Element) -> tuple[np.ndarray, np.ndarray]:
    o = el.find("origin")
    xyz = [float(v) for v in (o.get("xyz", "0 0 0") if o is not None else "0 0 0").split()]
    rpy = [float(v) for v in (o.get("rpy", "0 0 0") if o is not None else "0 0 0").split()]
    return np.array(xyz), np.array(rpy)


def _fmt(v) -> str:
    return " ".join(repr(float(x)) for x in v)


def _tool_joint(robot: ET.Element, name: str, child: str, T_mm: np.ndarray) -> None:
    ET.SubElement(robot, "link", name=child).append(_inertial_el(0.05, (0, 0, 0), 1e-5))
    j = ET.SubElement(robot, "joint", name=name, type="fixed")
    ET.SubElement(j, "parent", link=FLANGE_FRAME)
    ET.SubElement(j, "child", link=child)
    ET.SubElement(j, "origin", xyz=_fmt(T_mm[:3, 3] * 1e-3), rpy=_fmt(_matrix_rpy(T_mm[:3, :3])))


def _inertial_el(mass: float, com, inertia: float) -> ET.Element:
    e = ET.Element("inertial")
    ET.SubElement(e, "origin", xyz=_fmt(com), rpy="0 0 0")
    ET.SubElement(e, "mass", value=repr(mass))
    ET.SubElement(e, "inertia", ixx=repr(inertia), ixy="0", ixz="0", iyy=repr(inertia), iyz="0", izz=repr(inertia))
    return e


def normalised_urdf(cfg: ArmDescriptionConfig, xml: str | None = None) -> str:
    """The normalised URDF XML (see the module docstring) of ``cfg``; raises ValueError (one line)."""
    src = str(cfg.urdf)  # as given (Path() would fold package:// to package:/)
    text = read_robot_xml(cfg.urdf, cfg.package_paths, cfg.xacro_args) if xml is None else xml
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"{src}: not valid XML ({exc})") from None
    if root.tag != "robot":
        raise ValueError(f"{src}: root element <{root.tag}>, expected <robot>")
    T_tube = validate_transform(cfg.T_flange_guidetube_mm, f"{src}: T_flange_guidetube")
    T_marker = validate_transform(cfg.T_flange_armmarker_mm, f"{src}: T_flange_armmarker")
    chain = _chain(root, cfg.base_link, cfg.flange_link, src)
    known = {j.name for j in chain}
    for name in cfg.limit_overrides:
        if name not in known:
            raise ValueError(f"{src}: limit override for joint {name!r}: not on the chain {cfg.base_link} -> "
                             f"{cfg.flange_link}")
    rename = {cfg.base_link: BASE_FRAME, cfg.flange_link: FLANGE_FRAME}
    clash = {BASE_FRAME, FLANGE_FRAME, TUBE_FRAME, MARKER_FRAME} & ({j.child for j in chain[:-1]})
    if clash:
        raise ValueError(f"{src}: link {sorted(clash)[0]!r} on the chain uses a spine_nav frame name")
    link_els = {l.get("name"): l for l in root.findall("link")}
    robot = ET.Element("robot", name=root.get("name", "arm"))
    mj = ET.SubElement(robot, "mujoco")
    ET.SubElement(mj, "compiler", fusestatic="false", discardvisual="true", balanceinertia="true", angle="radian")
    n_axes = 0
    for link_name in [cfg.base_link] + [j.child for j in chain]:
        new = ET.SubElement(robot, "link", name=rename.get(link_name, link_name))
        inert = link_els[link_name].find("inertial")
        mass = inert.find("mass") if inert is not None else None
        if inert is not None and mass is not None and float(mass.get("value", "0")) > 0:
            new.append(inert)
        else:
            new.append(_inertial_el(DEFAULT_MASS_KG, (0, 0, 0), DEFAULT_INERTIA_KG_M2))
    for j in chain:
        where = f"{src}: <joint name={j.name!r}>"
        if j.type in ("prismatic", "floating", "planar"):
            raise ValueError(f"{where}: type {j.type!r} on the chain {cfg.base_link} -> {cfg.flange_link}; "
                             f"spine_nav drives revolute/continuous joints only")
        if j.type not in ("revolute", "continuous", "fixed"):
            raise ValueError(f"{where}: unknown joint type {j.type!r}")
        if j.el.find("mimic") is not None and j.type != "fixed":
            raise ValueError(f"{where}: a <mimic> joint on the chain is not supported")
        out = ET.SubElement(robot, "joint", name=j.name, type="fixed" if j.type == "fixed" else "revolute")
        ET.SubElement(out, "parent", link=rename.get(j.parent, j.parent))
        ET.SubElement(out, "child", link=rename.get(j.child, j.child))
        xyz, rpy = _origin(j.el)
        ET.SubElement(out, "origin", xyz=_fmt(xyz), rpy=_fmt(rpy))
        if j.type == "fixed":
            continue
        n_axes += 1
        ax = j.el.find("axis")
        axis = np.array([float(v) for v in (ax.get("xyz") if ax is not None else "1 0 0").split()])
        if axis.shape != (3,) or not np.isfinite(axis).all() or np.linalg.norm(axis) < 1e-9:
            raise ValueError(f"{where}: <axis xyz> must be a non-zero 3-vector")
        ET.SubElement(out, "axis", xyz=_fmt(axis / np.linalg.norm(axis)))
        lim = j.el.find("limit")
        lo_hi = cfg.limit_overrides.get(j.name)
        if lo_hi is None:
            if j.type == "continuous":
                lo_hi = (-CONTINUOUS_RANGE_RAD, CONTINUOUS_RANGE_RAD)
            elif lim is None or lim.get("lower") is None or lim.get("upper") is None:
                raise ValueError(f"{where}: <limit lower upper> missing (give them, or override the joint's limits)")
            else:
                lo_hi = (float(lim.get("lower")), float(lim.get("upper")))
        lo, hi = float(lo_hi[0]), float(lo_hi[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(f"{where}: joint limits [{lo}, {hi}] are not an interval")
        vel = float(lim.get("velocity", "nan")) if lim is not None else float("nan")
        eff = float(lim.get("effort", "nan")) if lim is not None else float("nan")
        if not (vel > 0 and eff > 0):
            raise ValueError(f"{where}: <limit velocity effort> missing or not positive")
        ET.SubElement(out, "limit", lower=repr(lo), upper=repr(hi), velocity=repr(vel), effort=repr(eff))
        dyn = j.el.find("dynamics")
        if dyn is not None:
            out.append(dyn)
    if n_axes < MIN_AXES:
        raise ValueError(f"{src}: the chain {cfg.base_link} -> {cfg.flange_link} has {n_axes} revolute axes; "
                         f"aligning a guide tube needs >= {MIN_AXES}")
    _tool_joint(robot, "guide_tube_joint", TUBE_FRAME, T_tube)
    _tool_joint(robot, "arm_marker_joint", MARKER_FRAME, T_marker)
    ET.indent(robot)
    return ET.tostring(robot, encoding="unicode")


def load_description(cfg: ArmDescriptionConfig) -> ArmModel:
    """The :class:`ArmModel` of a robot description (see the module docstring)."""
    src = Path(cfg.urdf)
    xml = normalised_urdf(cfg)
    model = parse_urdf(xml, src)
    return ArmModel(urdf_xml=model.urdf_xml, source=src, joints=model.joints, fixed_tree=model.fixed_tree,
                    reach_joints=None)


# Command-line selection of a description (`spine-nav arm check`, `spine-nav bench arm`).

def add_description_arguments(p: argparse.ArgumentParser) -> None:
    """``--urdf FILE --base-link L --flange-link L [--tool-xyz-mm ...] [--package-path DIR] ...``."""
    g = p.add_argument_group("arm description (default: our own arm)")
    g.add_argument("--urdf", help="URDF or xacro file, or package://pkg/path in an installed package's share")
    g.add_argument("--base-link", help="the robot's base link (with --urdf)")
    g.add_argument("--flange-link", help="the link the guide tube is mounted on (with --urdf)")
    g.add_argument("--tool-xyz-mm", type=float, nargs=3, default=[0.0, 0.0, 100.0], metavar=("X", "Y", "Z"),
                   help="T_flange_guidetube translation (mm; default 0 0 100)")
    g.add_argument("--tool-quat-xyzw", type=float, nargs=4, metavar=("X", "Y", "Z", "W"),
                   help="T_flange_guidetube rotation (unit quaternion)")
    g.add_argument("--tool-rpy", type=float, nargs=3, metavar=("R", "P", "Y"), help="... or URDF rpy (rad)")
    g.add_argument("--marker-xyz-mm", type=float, nargs=3, default=[70.0, 0.0, 20.0], metavar=("X", "Y", "Z"),
                   help="T_flange_armmarker translation (mm)")
    g.add_argument("--marker-quat-xyzw", type=float, nargs=4, metavar=("X", "Y", "Z", "W"),
                   help="T_flange_armmarker rotation (unit quaternion)")
    g.add_argument("--package-path", action="append", default=[], metavar="DIR",
                   help="where package:// and $(find pkg) resolve (DIR/pkg or DIR/share/pkg); repeatable")
    g.add_argument("--joint-limit", action="append", default=[], metavar="JOINT:LOWER:UPPER",
                   help="override a joint's limits (rad); repeatable")


def description_from_args(args: argparse.Namespace):
    """The ArmModel the ``--urdf ...`` options select (raises ValueError with a one-line reason)."""
    if not getattr(args, "urdf", None):
        if getattr(args, "base_link", None) or getattr(args, "flange_link", None):
            raise ValueError("--base-link/--flange-link: only with --urdf")
        return load_arm_model()
    if not args.base_link or not args.flange_link:
        raise ValueError("--urdf: needs --base-link and --flange-link")
    limits = {}
    for item in args.joint_limit:
        try:
            name, lo, hi = item.rsplit(":", 2)
            limits[name] = (float(lo), float(hi))
        except ValueError:
            raise ValueError(f"--joint-limit {item!r}: expected JOINT:LOWER:UPPER (rad)") from None
    cfg = ArmDescriptionConfig(
        urdf=args.urdf, base_link=args.base_link, flange_link=args.flange_link,
        T_flange_guidetube_mm=tool_transform_mm(args.tool_xyz_mm, args.tool_quat_xyzw, args.tool_rpy, "--tool"),
        T_flange_armmarker_mm=tool_transform_mm(args.marker_xyz_mm, args.marker_quat_xyzw, None, "--marker"),
        package_paths=tuple(args.package_path), limit_overrides=limits)
    return load_description(cfg)
