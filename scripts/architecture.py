"""spine_nav's import graph, read from the code, and the layering rule it must follow.

``python scripts/architecture.py``          rewrite the generated part of docs/architecture.md
``python scripts/architecture.py --check``  exit 1 if docs/architecture.md is not what the code gives

The graph is built with :mod:`ast` (no module is imported, so no import side effects): every
``import spine_nav.x`` / ``from spine_nav.x import y`` / relative import anywhere in a module (top level,
inside functions, under ``TYPE_CHECKING``) is an edge, because a lazy import is still a dependency.
``tests/test_layering.py`` holds the code to :data:`LAYERS` and :data:`ALLOWED`. Root modules
(``spine_nav/__init__.py``, ``spine_nav/resources.py``) belong to no layer: any package may import them
and they import no spine_nav package.
"""
from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "spine_nav"

#: The layers, bottom first. A package may import its own layer's packages only as :data:`ALLOWED`
#: says, and never a package of a higher layer.
LAYERS: dict[str, tuple[str, ...]] = {
    "foundation": ("geometry",),
    "data": ("imaging", "plan"),
    "core": ("phantom", "registration", "tracking", "guard", "arm", "rod", "training", "console"),
    "simulation": ("sim",),
    "ros": ("nodes", "bag"),
    "tools": ("bench", "demo"),
    "entry": ("cli",),
}

#: package -> the spine_nav packages it may import (the allowed-dependency matrix). Core packages
#: (``foundation``, ``data``, ``core``) import neither rclpy nor MuJoCo, even transitively
#: (:data:`CORE_FORBIDDEN`); ``sim`` is the MuJoCo layer, ``nodes`` and ``bag`` the ROS layer.
ALLOWED: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in {
    "geometry": (),
    "imaging": ("geometry",),
    "plan": ("geometry", "imaging"),  # plans are checked against CT volumes (bone quality, rendering)
    "phantom": ("geometry", "imaging", "plan"),  # renders volumes, plans screws
    "registration": ("geometry", "imaging", "plan"),
    "tracking": ("geometry", "plan"),  # the Slicer output sends the plan as markups
    "guard": ("geometry", "plan"),
    "arm": ("geometry", "plan"),
    "rod": ("geometry", "plan"),
    "training": ("geometry", "imaging", "plan", "phantom"),  # trainee cases are phantom cases
    "console": ("geometry", "imaging", "plan", "tracking", "training"),
    "sim": ("geometry", "plan", "arm", "tracking"),
    "nodes": ("geometry", "imaging", "plan", "phantom", "registration", "tracking", "guard", "arm", "rod", "training",
              "console", "sim"),
    "bag": ("geometry", "plan", "guard", "nodes"),
    "demo": ("geometry", "imaging", "plan", "phantom", "registration", "tracking", "guard", "arm", "rod", "training",
             "console", "sim", "nodes", "bag"),
    # benchmarks measure the demo's pipeline with the demo's parts (conductor, recorder, watchdog settings)
    "bench": ("geometry", "imaging", "plan", "phantom", "registration", "tracking", "guard", "arm", "rod", "training",
              "console", "sim", "nodes", "bag", "demo"),
    "cli": ("geometry", "imaging", "plan", "phantom", "registration", "tracking", "guard", "arm", "rod", "training",
            "console", "sim", "nodes", "bag", "bench", "demo"),
}.items()}

CORE_LAYERS = ("foundation", "data", "core")
#: Top-level modules a core package must not reach, directly or through other spine_nav modules.
CORE_FORBIDDEN = frozenset({
    "rclpy", "mujoco", "rosidl_runtime_py", "rosbag2_py", "launch", "launch_ros", "spine_nav_interfaces",
    "builtin_interfaces", "std_msgs", "std_srvs", "geometry_msgs", "sensor_msgs", "diagnostic_msgs",
    "visualization_msgs", "trajectory_msgs", "lifecycle_msgs", "rcl_interfaces",
})


@dataclass
class ImportGraph:
    """``modules[m]``: the spine_nav modules ``m`` imports; ``external[m]``: its other top-level imports."""

    modules: dict[str, set[str]] = field(default_factory=dict)
    external: dict[str, set[str]] = field(default_factory=dict)
    lines: dict[tuple[str, str], int] = field(default_factory=dict)  # (importer, imported) -> first line
    packages: set[str] = field(default_factory=set)  # the sub-packages of spine_nav (folders)

    def package(self, module: str) -> str:
        """``spine_nav.plan.model`` -> ``plan``; a root module (``spine_nav``, ``spine_nav.resources``) -> ``""``."""
        parts = module.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in self.packages else ""

    def package_edges(self) -> dict[tuple[str, str], list[str]]:
        """(package, package) -> ``"a.py:LINE -> b"`` witnesses, packages differing."""
        out: dict[tuple[str, str], list[str]] = {}
        for a, bs in self.modules.items():
            for b in bs:
                pa, pb = self.package(a), self.package(b)
                if pa != pb and pa and pb:
                    out.setdefault((pa, pb), []).append(f"{a}:{self.lines[(a, b)]} -> {b}")
        return out

    def reachable(self, start: str) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for b in self.modules.get(todo.pop(), ()):
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    def cycles(self) -> list[list[str]]:
        """Strongly connected components of more than one module (Tarjan), each sorted."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on: set[str] = set()
        out: list[list[str]] = []

        def visit(v: str) -> None:
            index[v] = low[v] = len(index)
            stack.append(v)
            on.add(v)
            for w in sorted(self.modules.get(v, ())):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

        sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
        for v in sorted(self.modules):
            if v not in index:
                visit(v)
        return sorted(out)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def build_graph(root: Path = REPO) -> ImportGraph:
    """The import graph of ``root/spine_nav`` (every .py file, parsed, never imported)."""
    files = {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}
    g = ImportGraph(modules={m: set() for m in files}, external={m: set() for m in files},
                    packages={p.parent.name for p in (root / PACKAGE).glob("*/__init__.py")})

    def resolve(name: str) -> str | None:
        """The longest existing module prefix of a dotted name (``a.b.func`` -> ``a.b``)."""
        while name:
            if name in files:
                return name
            name = name.rpartition(".")[0]
        return None

    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    head = ".".join(base + ([node.module] if node.module else []))
                else:
                    head = node.module or ""
                targets = [f"{head}.{a.name}" for a in node.names] if head.split(".")[0] == PACKAGE else [head]
            for t in targets:
                if t.split(".")[0] != PACKAGE:
                    g.external[mod].add(t.split(".")[0])
                    continue
                target = resolve(t)
                if target and target != mod:
                    g.modules[mod].add(target)
                    g.lines.setdefault((mod, target), node.lineno)
    return g


def layer_of(package: str) -> str:
    for layer, pkgs in LAYERS.items():
        if package in pkgs:
            return layer
    raise KeyError(package)


def mermaid(g: ImportGraph) -> str:
    """The package graph as a mermaid flowchart, one subgraph per layer (bottom layer last)."""
    edges = g.package_edges()
    lines = ["flowchart TD"]
    for layer in reversed(LAYERS):
        lines.append(f"  subgraph {layer}")
        lines.extend(f"    {p}" for p in LAYERS[layer])
        lines.append("  end")
    for a, b in sorted(edges):
        lines.append(f"  {a} --> {b}")
    return "\n".join(lines)


def matrix(g: ImportGraph) -> str:
    """The allowed-dependency matrix as a markdown table: ``n`` = n imports, ``.`` = allowed but unused."""
    edges = g.package_edges()
    pkgs = [p for layer in LAYERS.values() for p in layer]
    rows = ["| imports -> | " + " | ".join(pkgs) + " |", "|---" * (len(pkgs) + 1) + "|"]
    for a in pkgs:
        cells = []
        for b in pkgs:
            n = len(edges.get((a, b), ()))
            cells.append(str(n) if n else ("." if b in ALLOWED[a] else ""))
        rows.append(f"| **{a}** | " + " | ".join(cells) + " |")
    return "\n".join(rows)


BEGIN = "<!-- generated by scripts/architecture.py: do not edit below -->"
END = "<!-- end of generated part -->"


def generated_block(g: ImportGraph) -> str:
    n_mod = len(g.modules)
    n_edges = sum(len(v) for v in g.modules.values())
    return "\n".join([
        BEGIN,
        "",
        f"Package import graph ({n_mod} modules, {n_edges} module-to-module imports; an arrow: at least one "
        "module of a package imports one of the other; the matrix below counts them):",
        "",
        "```mermaid",
        mermaid(g),
        "```",
        "",
        "Allowed-dependency matrix (row imports column; a number = that many module imports today, "
        "`.` = allowed, not used; empty = forbidden):",
        "",
        matrix(g),
        "",
        END,
    ])


def render_doc(doc: str, g: ImportGraph) -> str:
    """``doc`` with its generated part replaced (appended when it has none)."""
    block = generated_block(g)
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    return doc.rstrip("\n") + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/architecture.md is out of date")
    args = ap.parse_args(argv)
    path = REPO / "docs" / "architecture.md"
    doc = path.read_text()
    new = render_doc(doc, build_graph(REPO))
    if args.check:
        if new != doc:
            print(f"{path}: out of date, run: python scripts/architecture.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
