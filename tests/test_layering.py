"""Layering as a checked rule: spine_nav's import graph (read with ast from the code, nothing imported)
against the allowed-dependency matrix of its packages (scripts/architecture.py: LAYERS, ALLOWED), and
docs/architecture.md drawn from the same graph."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _architecture():
    spec = importlib.util.spec_from_file_location("spine_nav_architecture", REPO / "scripts" / "architecture.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


arch = _architecture()
GRAPH = arch.build_graph(REPO)

#: Module import cycles known and owned elsewhere. Each entry must still be a cycle (so a fix is
#: noticed) and no other cycle may exist. (The nodes runner <-> in_process <-> tracker_bridge /
#: trajectory_guard cycle of issue 16 is gone: helper `nodes` linked them by topic.)
KNOWN_CYCLES: list[list[str]] = []

#: Package imports against the matrix that landed on main while the layering was being checked (issue 16
#: follow-ups). Each must still exist (so a fix is noticed); no other may. (Empty: console.trainee's ROS
#: part went to nodes.console_bridge / cli.train, bench.recording prints with bench.info, demo's floor keys
#: went to demo.report so that bench may use demo, placement errors went to plan.placement.)
KNOWN_BACK_EDGES: set[tuple[str, str]] = set()
#: Core modules that reach ROS through a known back edge above.
KNOWN_CORE_LEAKS: set[str] = set()


def test_every_package_has_a_layer_and_a_matrix_row():
    packages = {GRAPH.package(m) for m in GRAPH.modules} - {""}
    in_layers = [p for layer in arch.LAYERS.values() for p in layer]
    assert len(in_layers) == len(set(in_layers)), "a package is in two layers"
    assert packages == set(in_layers) == set(arch.ALLOWED), (
        f"packages {sorted(packages)} vs layers {sorted(in_layers)} vs matrix {sorted(arch.ALLOWED)}")


def test_the_matrix_points_down_or_sideways_only_and_has_no_cycle():
    order = list(arch.LAYERS)
    for a, allowed in arch.ALLOWED.items():
        for b in allowed:
            assert order.index(arch.layer_of(b)) <= order.index(arch.layer_of(a)), f"{a} may import higher {b}"
    # no cycle in the allowed matrix itself (so none in the code either)
    state: dict[str, int] = {}

    def visit(p: str, path: list[str]) -> None:
        assert state.get(p) != 1, f"allowed-dependency cycle: {' -> '.join(path + [p])}"
        if state.get(p) == 2:
            return
        state[p] = 1
        for q in sorted(arch.ALLOWED[p]):
            visit(q, path + [p])
        state[p] = 2

    for p in arch.ALLOWED:
        visit(p, [])


def test_package_imports_follow_the_matrix():
    edges = GRAPH.package_edges()
    bad = {f"{a} -> {b}": why[:3] for (a, b), why in sorted(edges.items())
           if b not in arch.ALLOWED[a] and (a, b) not in KNOWN_BACK_EDGES}
    assert not bad, f"imports the layering forbids (docs/architecture.md): {bad}"
    for a, b in KNOWN_BACK_EDGES:
        assert (a, b) in edges and b not in arch.ALLOWED[a], f"{a} -> {b} is fixed: remove it from KNOWN_BACK_EDGES"


def test_root_modules_import_no_package():
    """spine_nav/__init__.py and spine_nav/resources.py are below every layer: importable by all."""
    roots = sorted(m for m in GRAPH.modules if GRAPH.package(m) == "")
    assert "spine_nav.resources" in roots
    for m in roots:
        assert not {GRAPH.package(b) for b in GRAPH.modules[m]} - {""}, f"{m} imports {GRAPH.modules[m]}"


def test_sim_sits_above_arm_and_the_phantom_has_one_home():
    edges = GRAPH.package_edges()
    assert ("sim", "arm") in edges and ("arm", "sim") not in edges
    phantom_modules = {m for m in GRAPH.modules if m.rsplit(".", 1)[-1] in ("phantom", "anatomy")
                       and GRAPH.package(m) != "phantom" and not m.startswith("spine_nav.cli.")}
    assert not phantom_modules, f"phantom code outside spine_nav.phantom: {phantom_modules}"
    for pkg in ("imaging", "plan"):
        assert (pkg, "phantom") not in edges, f"{pkg} imports the phantom: {edges.get((pkg, 'phantom'))}"


def test_no_module_import_cycles_beyond_the_known_ones():
    cycles = GRAPH.cycles()
    assert [c for c in cycles if c not in KNOWN_CYCLES] == []
    for known in KNOWN_CYCLES:
        assert known in cycles, f"{known} is no longer a cycle: remove it from KNOWN_CYCLES"


@pytest.mark.parametrize("package", [p for layer in arch.CORE_LAYERS for p in arch.LAYERS[layer]])
def test_core_packages_reach_neither_ros_nor_mujoco(package):
    """Transitively: following every spine_nav import (lazy ones too) from each module of the package."""
    for mod in sorted(m for m in GRAPH.modules if GRAPH.package(m) == package and m not in KNOWN_CORE_LEAKS):
        for reached in sorted(GRAPH.reachable(mod)):
            forbidden = GRAPH.external[reached] & arch.CORE_FORBIDDEN
            assert not forbidden, f"{mod} reaches {sorted(forbidden)} through {reached}"


def test_graph_sees_lazy_and_relative_imports(tmp_path):
    """The ast reader counts an import inside a function and a relative import as edges."""
    pkg = tmp_path / "spine_nav"
    (pkg / "a").mkdir(parents=True)
    (pkg / "b").mkdir()
    for p in (pkg, pkg / "a", pkg / "b"):
        (p / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("def f():\n    from spine_nav.b.y import g\n    import rclpy\n")
    (pkg / "b" / "y.py").write_text("from . import z\nfrom .z import h\ndef g():\n    pass\n")
    (pkg / "b" / "z.py").write_text("def h():\n    pass\n")
    g = arch.build_graph(tmp_path)
    assert g.modules["spine_nav.a.x"] == {"spine_nav.b.y"}
    assert g.modules["spine_nav.b.y"] == {"spine_nav.b.z"}
    assert g.external["spine_nav.a.x"] == {"rclpy"}
    assert g.reachable("spine_nav.a.x") == {"spine_nav.a.x", "spine_nav.b.y", "spine_nav.b.z"}


def test_architecture_doc_is_generated_from_the_code():
    doc = (REPO / "docs" / "architecture.md").read_text()
    assert arch.BEGIN in doc, "docs/architecture.md has no generated part"
    assert arch.render_doc(doc, GRAPH) == doc, "docs/architecture.md is out of date: run python scripts/architecture.py"
