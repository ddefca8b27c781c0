"""Every link and path pointer to the docs resolves: README.md and docs/*.md links to docs/ pages (and
their #anchors), and docstrings' / comments' pointers to docs/*.md or README sections."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")
DOC_PATH = re.compile(r"\bdocs/[A-Za-z0-9_./-]+\.md\b")
README_SECTION = re.compile(r'README(?:\.md)?,? (?:section )?"([^"]+)"')


def _markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _anchors(md: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces -> '-'."""
    out = set()
    for line in md.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return out


def test_every_relative_link_in_readme_and_docs_resolves():
    bad = []
    for md in _markdown_files():
        for target in LINK.findall(md.read_text()):
            if re.match(r"[a-z]+:", target):  # http(s), mailto: not ours to check
                continue
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            if not dest.exists():
                bad.append(f"{md.relative_to(REPO)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{md.relative_to(REPO)}: {target} (no such heading)")
    assert not bad, "\n".join(bad)


def test_every_docs_pointer_in_code_and_docs_names_an_existing_page():
    bad = []
    files = [*_markdown_files(), *sorted((REPO / "spine_nav").rglob("*.py")), *sorted((REPO / "tests").glob("*.py")),
             *sorted((REPO / "scripts").glob("*.py")), *sorted((REPO / "config").glob("*.yaml")),
             *sorted((REPO / "launch").glob("*.py"))]
    for f in files:
        for ref in DOC_PATH.findall(f.read_text(errors="replace")):
            if "*" not in ref and not (REPO / ref).is_file():
                bad.append(f"{f.relative_to(REPO)}: {ref}")
    assert not bad, "\n".join(bad)


def test_readme_sections_named_in_docstrings_exist():
    headings = {line.lstrip("#").strip() for line in (REPO / "README.md").read_text().splitlines()
                if line.startswith("#")}
    bad = []
    for f in sorted((REPO / "spine_nav").rglob("*.py")):
        for name in README_SECTION.findall(f.read_text()):
            if name not in headings:
                bad.append(f"{f.relative_to(REPO)}: README \"{name}\"")
    assert not bad, "\n".join(bad)


def test_no_pointer_to_the_design_notes_outside_the_repository():
    bad = [str(f.relative_to(REPO)) for f in [*sorted((REPO / "spine_nav").rglob("*.py")), *_markdown_files()]
           if "design.md" in f.read_text()]
    assert not bad, bad


def test_readme_is_a_front_door():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for page in sorted((REPO / "docs").glob("*.md")):  # every capability page is reachable from the front door
        assert f"docs/{page.name}" in text, f"README.md does not link docs/{page.name}"


CODE_PATH = re.compile(r"(?<![\w/.:-])(?:spine_nav|tests|scripts|config|launch|urdf)/[A-Za-z0-9_./-]*[A-Za-z0-9_]\.(?:py|yaml|xacro|urdf|json)\b")


def test_every_source_file_named_in_readme_and_docs_exists():
    bad = []
    for md in _markdown_files():
        for ref in CODE_PATH.findall(md.read_text()):
            if "*" not in ref and not (REPO / ref).exists():
                bad.append(f"{md.relative_to(REPO)}: {ref}")
    assert not bad, "\n".join(bad)


DOC_SECTION = re.compile(r'(docs/[A-Za-z0-9_./-]+\.md),? (?:section |paragraph )?"([^"]+)"')
BOLD_LEAD = re.compile(r"^\*\*([^*]+?)\.?\*\*")


def test_docs_sections_named_in_code_exist():
    """A pointer such as ``docs/safety.md, "Which inputs and processes are safety-relevant"`` names a heading of
    that page or the bold lead of one of its paragraphs (``**Lifecycle (managed nodes).**``); comments and
    docstrings wrapped over lines are read joined."""
    bad = []
    for f in [*sorted((REPO / "spine_nav").rglob("*.py")), *sorted((REPO / "scripts").glob("*.py")),
              *sorted((REPO / "launch").glob("*.py"))]:
        text = re.sub(r"\s*\n\s*(?:#:?\s*)?", " ", f.read_text())
        for page, name in DOC_SECTION.findall(text):
            lines = (REPO / page).read_text().splitlines() if (REPO / page).is_file() else []
            titles = {line.lstrip("#").strip() for line in lines if line.startswith("#")}
            titles |= {m.group(1) for line in lines if (m := BOLD_LEAD.match(line))}
            if name not in titles:
                bad.append(f'{f.relative_to(REPO)}: {page}, "{name}"')
    assert not bad, "\n".join(bad)
