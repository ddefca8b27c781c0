#!/usr/bin/env python3
"""Generate the ROS 2 surface tables (topics, services, parameters) from the code itself.

Every node of the registry (:data:`spine_nav.nodes.registry.NODES`) is built alone, with its code
defaults, in the namespace ``/surface`` (so relative names come out relative and absolute ones, such as
``/diagnostics``, absolute); lifecycle nodes are configured. Read from the live objects:

* topics: every publisher and subscription the node (and any helper node it creates, e.g. an
  ``InnerNode`` for slow services) holds, with its message type and QoS (named after the profile of
  :mod:`spine_nav.nodes.qos` it equals);
* services: every service server (rclpy's own parameter / lifecycle / type-description services left out);
* parameters: every ``declare_parameter(s)`` call made while the node was built: name, declared
  default, and the ``ParameterDescriptor``'s description, unit (``additional_constraints``), range,
  read-only flag, whatever source the node declares them from.

Listening ports are moved to free ones while the tables are built (ports already open on the machine
must not matter); the tables show the declared defaults.

Writes ``docs/ros-surface.md`` (full tables) and the compact per-node table between the
``<!-- ros-surface:begin -->`` / ``<!-- ros-surface:end -->`` markers of ``README.md``.
``--check`` writes nothing and exits 1 when either file differs from the generated text
(``tests/test_docs_surface.py`` runs the same comparison).

Usage: ``python scripts/ros_surface.py [--check]`` (from the repository root, with the ROS 2 wheels on
the path: ``PYTHONPATH=$PWD .venv/bin/python scripts/ros_surface.py``).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "ros-surface.md"
README = REPO / "README.md"
BEGIN, END = "<!-- ros-surface:begin -->", "<!-- ros-surface:end -->"
NS = "/surface"
#: services every rclpy node gets (parameters, lifecycle, type descriptions): not part of our surface
STANDARD_SERVICE_SUFFIXES = ("/describe_parameters", "/get_parameter_types", "/get_parameters",
                             "/list_parameters", "/set_parameters", "/set_parameters_atomically",
                             "/get_type_description", "/change_state", "/get_state", "/get_available_states",
                             "/get_available_transitions", "/get_transition_graph")
STANDARD_TOPICS = ("/rosout", "/parameter_events")
#: parameters rclpy declares on every node
RCLPY_PARAMETERS = ("use_sim_time", "start_type_description_service")


@dataclass
class Endpoint:
    name: str
    type: str
    qos: str = ""


@dataclass
class Param:
    name: str
    default: object
    description: str = ""
    unit: str = ""
    range: str = ""
    read_only: bool = False


@dataclass
class NodeSurface:
    name: str
    publishes: list[Endpoint] = field(default_factory=list)
    subscribes: list[Endpoint] = field(default_factory=list)
    services: list[Endpoint] = field(default_factory=list)
    parameters: list[Param] = field(default_factory=list)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overrides(node: str) -> list[str]:
    """Listening/connecting ports moved off their defaults while the node is built (defaults still shown)."""
    ports = {"sim_tracker": ["port"], "tracker_bridge": ["port"], "console_bridge": ["port"], "slicer_output": ["port"]}
    out: list[str] = []
    for p in ports.get(node, []):
        out += ["-p", f"{p}:={_free_port()}"]
    if node == "tracker_bridge":
        out += ["-p", "console_port:=0"]  # (older bridges carried the Slicer output themselves)
    if node == "slicer_output":
        out += ["-p", "host:=127.0.0.1"]
    return out


def _rel(name: str) -> str:
    return name[len(NS) + 1:] if name.startswith(NS + "/") else name


def _type_name(cls) -> str:
    mod = cls.__module__.split(".")  # e.g. geometry_msgs.msg._pose_stamped
    return f"{mod[0]}/{cls.__name__}"


def _qos_name(profile) -> str:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from spine_nav.nodes import qos as q

    for const in sorted(n for n in dir(q) if n.endswith("_QOS")):
        ref = getattr(q, const)
        if not isinstance(ref, QoSProfile):  # e.g. a plain history depth
            continue
        if (ref.reliability, ref.durability, ref.history, ref.depth) == (
                profile.reliability, profile.durability, profile.history, profile.depth):
            return const
    rel = "reliable" if profile.reliability == ReliabilityPolicy.RELIABLE else "best effort"
    dur = ", transient local" if profile.durability == DurabilityPolicy.TRANSIENT_LOCAL else ""
    return f"{rel}{dur}, depth {profile.depth}"


def _fmt_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_value(x) for x in v) + "]"
    if hasattr(v, "name") and type(v).__name__ == "Type":  # declared with a type, no default
        return f"({v.name.lower().replace('_', ' ')}, no default)"
    return str(v)


def _describe(desc) -> tuple[str, str, str, bool]:
    if desc is None:
        return "", "", "", False
    rng = ""
    for r in list(getattr(desc, "floating_point_range", []) or []) + list(getattr(desc, "integer_range", []) or []):
        lo, hi = r.from_value, r.to_value
        rng = f"{_fmt_value(lo)} .. {_fmt_value(hi)}"
    unit = (desc.additional_constraints or "").strip()
    unit = unit[len("unit:"):].strip() if unit.startswith("unit:") else unit
    return (desc.description or ""), unit, rng, bool(desc.read_only)


@contextmanager
def _recording_declarations():
    """Record every declare_parameters call (name, default, descriptor) and every Node built."""
    from rclpy.node import Node

    declared: list[tuple[object, str, object, object]] = []
    built: list[Node] = []
    orig_decl, orig_init = Node.declare_parameters, Node.__init__

    def declare_parameters(self, namespace, parameters, ignore_override=False):
        for spec in parameters:
            name, value, desc = (list(spec) + [None, None])[:3]
            full = f"{namespace}.{name}" if namespace else name
            declared.append((self, full, value, desc))
        return orig_decl(self, namespace, parameters, ignore_override)

    def init(self, *a, **k):
        orig_init(self, *a, **k)
        built.append(self)

    Node.declare_parameters, Node.__init__ = declare_parameters, init
    try:
        yield declared, built
    finally:
        Node.declare_parameters, Node.__init__ = orig_decl, orig_init


def node_surface(name: str) -> NodeSurface:
    """Build node ``name`` alone with its defaults and read its surface (see the module docstring)."""
    import rclpy
    from rclpy.context import Context

    from spine_nav.nodes.registry import node_class

    cls = node_class(name)
    ctx = Context()
    rclpy.init(args=["ros_surface", "--ros-args", "-r", f"__ns:={NS}", *_overrides(name)], context=ctx)
    surf = NodeSurface(name)
    try:
        with _recording_declarations() as (declared, built):
            node = cls(context=ctx)
            if hasattr(node, "trigger_configure"):  # lifecycle: the surface exists once configured
                node.trigger_configure()
        try:
            pubs, subs, srvs = {}, {}, {}
            for n in built:
                for p in n.publishers:
                    if p.topic_name not in STANDARD_TOPICS:
                        pubs[p.topic_name] = Endpoint(_rel(p.topic_name), _type_name(p.msg_type), _qos_name(p.qos_profile))
                for s in n.subscriptions:
                    if s.topic_name not in STANDARD_TOPICS:
                        subs[s.topic_name] = Endpoint(_rel(s.topic_name), _type_name(s.msg_type), _qos_name(s.qos_profile))
                for s in n.services:
                    if not s.srv_name.endswith(STANDARD_SERVICE_SUFFIXES):
                        srvs[s.srv_name] = Endpoint(_rel(s.srv_name), _type_name(s.srv_type))
            surf.publishes = [pubs[k] for k in sorted(pubs)]
            surf.subscribes = [subs[k] for k in sorted(subs)]
            surf.services = [srvs[k] for k in sorted(srvs)]
            seen: dict[str, Param] = {}
            for owner, pname, value, desc in declared:
                if owner is node and pname not in seen and pname not in RCLPY_PARAMETERS:
                    d, unit, rng, ro = _describe(desc)
                    seen[pname] = Param(pname, value, d, unit, rng, ro)
            surf.parameters = [seen[k] for k in sorted(seen)]
        finally:
            for n in reversed(built):
                try:
                    n.destroy_node()
                except Exception:  # noqa: BLE001 - a node's own teardown must not stop the table
                    pass
    finally:
        if ctx.ok():
            rclpy.shutdown(context=ctx)
    return surf


def all_surfaces() -> list[NodeSurface]:
    from spine_nav.nodes.registry import NODES

    return [node_surface(n) for n in NODES]


# ------------------------------------------------------------------------------------------- rendering
def _cell(eps: list[Endpoint], with_type: bool) -> str:
    if not eps:
        return ""
    return ", ".join(f"`{e.name}`" + (f" ({e.type.split('/')[-1]})" if with_type else "") for e in eps)


def readme_table(surfaces: list[NodeSurface]) -> str:
    lines = ["| node | publishes | subscribes | services |", "| --- | --- | --- | --- |"]
    for s in surfaces:
        lines.append(f"| `{s.name}` | {_cell(s.publishes, False)} | {_cell(s.subscribes, False)} | "
                     f"{_cell(s.services, False)} |")
    return "\n".join(lines)


def doc_page(surfaces: list[NodeSurface]) -> str:
    out = ["# ROS 2 surface (generated)", "",
           "Generated from the code by `scripts/ros_surface.py` (do not edit by hand; "
           "`tests/test_docs_surface.py` fails when this page and the code differ). Every node of",
           "`spine_nav/nodes/registry.py`, built alone with its declared defaults; names relative to the node's "
           "namespace unless they start with `/`.",
           "QoS names are the profiles of `spine_nav/nodes/qos.py`. A parameter's value at run time comes from "
           "`config/nodes.yaml` (`spine-nav up`, `launch/`) or `-p`; the defaults below are the code's.",
           "Some topics follow parameters (e.g. `arm_guide`'s `command_interface` picks the command topic; "
           "the `*_topic` parameters rename topics): the tables show the defaults.", "",
           "## Topics", "",
           "QoS per side (a reliable subscription does not match a best-effort publisher).", "",
           "| topic | type | published by | QoS published | subscribed by | QoS subscribed |",
           "| --- | --- | --- | --- | --- | --- |"]
    topics: dict[str, dict] = {}
    for s in surfaces:
        for side, eps in (("pub", s.publishes), ("sub", s.subscribes)):
            for e in eps:
                t = topics.setdefault(e.name, {"types": set(), "pub": [], "sub": [], "pub_qos": set(), "sub_qos": set()})
                t["types"].add(e.type)
                t[side].append(s.name)
                t[f"{side}_qos"].add(e.qos)
    for name in sorted(topics):
        t = topics[name]
        out.append(f"| `{name}` | {', '.join(sorted(t['types']))} | {', '.join(t['pub'])} | "
                   f"{' / '.join(sorted(t['pub_qos']))} | {', '.join(t['sub'])} | {' / '.join(sorted(t['sub_qos']))} |")
    out += ["", "## Services", "", "| service | type | node |", "| --- | --- | --- |"]
    for s in surfaces:
        for e in s.services:
            out.append(f"| `{e.name}` | {e.type} | {s.name} |")
    out += ["", "## Parameters", ""]
    for s in surfaces:
        out += [f"### `{s.name}`", ""]
        if not s.parameters:
            out += ["(none)", ""]
            continue
        out += ["| parameter | default | unit | range | description |", "| --- | --- | --- | --- | --- |"]
        for p in s.parameters:
            desc = p.description.replace("|", "\\|").replace("\n", " ")
            if p.read_only:
                desc = (desc + " (read-only)").strip()
            out.append(f"| `{p.name}` | `{_fmt_value(p.default)}` | {p.unit} | {p.range} | {desc} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def readme_with_table(readme: str, table: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"{README}: no {BEGIN} ... {END} markers")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def generate() -> tuple[str, str]:
    """(docs/ros-surface.md text, README.md text with the table) from the code and the current README."""
    surfaces = all_surfaces()
    return doc_page(surfaces), readme_with_table(README.read_text(), readme_table(surfaces))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if docs differ from the code")
    args = ap.parse_args(argv)
    # no discovery: the nodes are only built and read, never talk (nothing of a running stack is seen)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "OFF"
    doc, readme = generate()
    stale = [p for p, text in ((DOC, doc), (README, readme)) if not p.is_file() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(REPO)}: differs from the code (run scripts/ros_surface.py)", file=sys.stderr)
        return 1 if stale else 0
    for p, text in ((DOC, doc), (README, readme)):
        p.write_text(text)
    print(f"wrote {DOC.relative_to(REPO)} and the table in {README.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
