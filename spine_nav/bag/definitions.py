"""ROS 2 message definitions (``ros2msg`` schema text) for the bag's schema records.

A rosbag2 MCAP file stores, per message type, the ``.msg`` text of the type followed by every type it
uses, each after a separator line and ``MSG: pkg/Name`` (the format rosbag2, Foxglove and
``mcap-ros2-support`` read). With it a reader without our package (no ``spine_nav_interfaces``
installed) decodes our messages. The ``.msg`` files come from the installed packages' ``share/PKG/msg``
folders (the venv's prefix and ``AMENT_PREFIX_PATH``) and, for ``spine_nav_interfaces``, from this
repository's own ``spine_nav_interfaces/msg``.
"""
from __future__ import annotations

import os
import re
import sys
from functools import lru_cache
from pathlib import Path

from spine_nav.resources import source_checkout

SEPARATOR = "=" * 80
PRIMITIVES = frozenset({"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16",
                        "int32", "uint32", "int64", "uint64", "string", "wstring"})


class DefinitionNotFound(LookupError):
    pass


def _search_roots() -> list[Path]:
    roots = [Path(sys.prefix) / "share"]
    for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if p:
            roots.append(Path(p) / "share")
    return roots


@lru_cache(maxsize=None)
def msg_text(type_name: str) -> str:
    """The ``.msg`` text of ``pkg/msg/Name`` (or ``pkg/Name``)."""
    pkg, name = _split(type_name)
    candidates = [r / pkg / "msg" / f"{name}.msg" for r in _search_roots()]
    checkout = source_checkout()
    if pkg == "spine_nav_interfaces" and checkout is not None:  # a source checkout's own definitions first
        candidates.insert(0, checkout / "spine_nav_interfaces" / "msg" / f"{name}.msg")
    for c in candidates:
        if c.is_file():
            return c.read_text()
    raise DefinitionNotFound(f"{pkg}/msg/{name}: no {name}.msg in " + ", ".join(str(c.parent) for c in candidates))


def _split(type_name: str) -> tuple[str, str]:
    parts = type_name.split("/")
    if len(parts) == 3 and parts[1] == "msg":
        return parts[0], parts[2]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ValueError(f"{type_name!r}: expected pkg/msg/Name")


def _field_types(text: str, pkg: str) -> list[str]:
    """The complex (non-primitive) field types of a ``.msg`` text, as ``pkg/Name``."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        t = line.split()[0]
        if "=" in line.split()[1] if len(line.split()) > 1 else False:
            continue  # a constant
        base = re.sub(r"\[.*\]$", "", t)
        base = re.sub(r"<=\d+$", "", base)
        if base in PRIMITIVES:
            continue
        if "/" not in base:
            base = "std_msgs/Header" if base == "Header" else f"{pkg}/{base}"
        out.append(base)
    return out


@lru_cache(maxsize=None)
def schema_text(type_name: str) -> str:
    """The full ``ros2msg`` schema for ``pkg/msg/Name``: its text, then each dependency once."""
    pkg, name = _split(type_name)
    main = msg_text(type_name)
    parts = [main.rstrip("\n")]
    seen: set[str] = set()
    todo = _field_types(main, pkg)
    while todo:
        dep = todo.pop(0)
        if dep in seen:
            continue
        seen.add(dep)
        dpkg, _ = _split(dep)
        text = msg_text(dep)
        parts.append(f"{SEPARATOR}\nMSG: {dep}\n{text.rstrip()}")
        todo += _field_types(text, dpkg)
    return "\n".join(parts) + "\n"
