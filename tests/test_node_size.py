"""Every node module is plumbing: at most 150 code lines (blank, comment and docstring lines not counted).

Nodes parse parameters, convert messages, call the core and publish; anything bigger belongs in the core
or in a shared helper of spine_nav/nodes (markers, diagnostics, parameters, in_process, conversions).
"""
from __future__ import annotations

import ast
import importlib.util
import io
import tokenize
from pathlib import Path

import pytest

from spine_nav.nodes.registry import NODES

MAX_CODE_LINES = 150
REPO = Path(__file__).resolve().parents[1]


def code_lines(source: str) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring (module, class, function)."""
    doc_lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                doc_lines.update(range(first.lineno, first.end_lineno + 1))
    code: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                        tokenize.ENDMARKER):
            continue
        code.update(line for line in range(tok.start[0], tok.end[0] + 1) if line not in doc_lines)
    return len(code)


def test_counter_skips_blank_comment_and_docstring_lines():
    src = ('"""Module\n\ndoc."""\nimport os  # why\n\n# a comment\n\n\ndef f(x):\n    """Doc\n    more."""\n'
           '    s = """not a\n    docstring"""\n    return (x +\n            1)\n')
    assert code_lines(src) == 6  # import, def, s = (2 lines), return (2 lines)


@pytest.mark.parametrize("name", sorted(NODES))
def test_node_module_is_at_most_150_code_lines(name):
    module = NODES[name].split(":")[0]
    path = Path(importlib.util.find_spec(module).origin)
    n = code_lines(path.read_text())
    assert n <= MAX_CODE_LINES, f"{path.relative_to(REPO)}: {n} code lines (> {MAX_CODE_LINES}): move logic to the core"
