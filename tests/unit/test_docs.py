"""The repository stands alone: no tracked file points a reader at a document that is not in it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"DESIGN\.md|\.\./shared")


def tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.splitlines()
            if name.endswith((".py", ".md", ".yaml", ".yml", ".toml", ".jinja", ".txt", ".cfg"))]


def test_no_file_cites_a_document_outside_the_repository():
    this = Path(__file__).resolve()
    hits = []
    for path in tracked_text_files():
        if path.resolve() == this or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert hits == []


def test_method_doc_has_the_sections_the_code_cites():
    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    cited = set()
    for path in (ROOT / "src").rglob("*.py"):
        cited |= set(re.findall(r"docs/method\.md §(\d)", path.read_text(encoding="utf-8")))
    assert cited, "the code cites docs/method.md"
    for section in sorted(cited):
        assert re.search(rf"^## {section}\. ", text, re.MULTILINE), f"docs/method.md has no section {section}"


def test_readme_stage_table_is_the_stage_registry():
    from sipo.stages.registry import stage_table

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("-->", text.index("<!-- stages:start")) + len("-->")
    end = text.index("<!-- stages:end -->")
    assert text[start:end].strip() == stage_table(), "regenerate the table with sipo.stages.registry.stage_table()"
