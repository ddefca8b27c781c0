"""Every attribute of the demo's classes (`Demo`, `HostsDemo`, ... in spine_nav/demo/) is first set in
``__init__`` (its own or a base class's in spine_nav), so a reader finds the whole state of a run in one
place, with its type and meaning (issue 16: `Demo` had 19 attributes first set in other methods).

Read with ``ast`` from the source; nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "spine_nav" / "demo"


def _self_stores(fn: ast.AST) -> dict[str, int]:
    """``self.X`` assigned anywhere in ``fn`` (plain, annotated, augmented, tuple targets): name -> first line."""
    out: dict[str, int] = {}
    for node in ast.walk(fn):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        for t in targets:
            for e in ast.walk(t):
                if (isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) and e.value.id == "self"
                        and isinstance(e.ctx, ast.Store)):
                    out.setdefault(e.attr, node.lineno)
    return out


def _classes() -> dict[str, tuple[Path, ast.ClassDef]]:
    """Every class of spine_nav by name (the demo's bases may live elsewhere in the package)."""
    out: dict[str, tuple[Path, ast.ClassDef]] = {}
    for path in sorted((REPO / "spine_nav").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                out.setdefault(node.name, (path, node))
    return out


CLASSES = _classes()


def _declared(name: str, classes: dict[str, tuple[Path, ast.ClassDef]]) -> set[str]:
    """Attributes set in ``__init__`` of ``name`` and its base classes found in ``classes`` (plus class-level
    annotations: a dataclass's fields)."""
    if name not in classes:
        return set()
    _, cls = classes[name]
    out: set[str] = set()
    for item in cls.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            out |= set(_self_stores(item))
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            out.add(item.target.id)
    for base in cls.bases:
        if isinstance(base, ast.Name):
            out |= _declared(base.id, classes)
    return out


def _outside_init(cls: ast.ClassDef, classes: dict[str, tuple[Path, ast.ClassDef]]) -> dict[str, str]:
    """Attributes a method other than ``__init__`` sets first: name -> "method:line"."""
    declared = _declared(cls.name, classes)
    bad: dict[str, str] = {}
    for item in cls.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name != "__init__":
            for attr, line in _self_stores(item).items():
                if attr not in declared:
                    bad.setdefault(attr, f"{item.name}:{line}")
    return bad


DEMO_CLASSES = sorted(name for name, (path, _) in CLASSES.items() if path.parent == DEMO)


def test_the_demo_classes_are_found():
    assert {"Demo", "HostsDemo"} <= set(DEMO_CLASSES)


@pytest.mark.parametrize("name", DEMO_CLASSES)
def test_no_attribute_is_first_set_outside_init(name):
    path, cls = CLASSES[name]
    bad = _outside_init(cls, CLASSES)
    assert not bad, (f"{path.relative_to(REPO)}: {name} sets {bad} (attribute: method:line) outside __init__; "
                     "declare them in __init__ (typed, with a comment) or return them in a result")


def test_the_checker_sees_an_attribute_set_outside_init():
    """Inherited and annotated declarations count; tuple, annotated and augmented targets are seen."""
    src = ("class Base:\n    def __init__(self):\n        self.a = 1\n"
           "class C(Base):\n    def __init__(self):\n        super().__init__()\n        self.b: int = 0\n"
           "    def run(self):\n        self.a, self.b = 2, 3\n        self.c = 4\n        self.d += 1\n"
           "        self.e: int = 5\n        x = self.f\n")
    classes = {n.name: (Path("x.py"), n) for n in ast.parse(src).body}
    assert _outside_init(classes["C"][1], classes) == {"c": "run:10", "d": "run:11", "e": "run:12"}
