"""No module compares a method's name except the method's own definitions: ``methods.py`` and the ablations'
selection rules. Everything else (the API, export, the report, the CLI help, the plan) reads what a ``MethodDef``
says. Likewise no module compares a data source's name outside the sources' definitions (``sipo/data/``) and the
synthetic benchmark's own package: the config checks and the oracle ablation read what a ``SourceDef`` says."""

from __future__ import annotations

import ast
from pathlib import Path

from sipo.data import SOURCES
from sipo.methods import METHODS

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "sipo"
OWN_MODULES = {"methods.py", "ablations.py"}
"""Where method names may be compared: the definitions, and the ablations' own selection rules."""
SOURCE_PACKAGES = ("data/", "synthetic/")
"""Where data source names may be compared: the sources' definitions and the synthetic benchmark's package."""


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for element in node.elts for s in _strings(element)]
    return []


def compared_method_names(tree: ast.AST, names: set[str] | None = None) -> list[tuple[int, str]]:
    """(line, name) of every registered method name (or of ``names``) that a comparison (``==``, ``!=``, ``in``)
    tests against."""
    names = set(METHODS.names()) if names is None else names
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                found += [(node.lineno, s) for s in _strings(operand) if s in names]
    return found


def test_the_finder_finds_a_comparison():
    assert compared_method_names(ast.parse('if method == "sipo" or m in ("dpo", "x"): pass')) == [
        (1, "sipo"), (1, "dpo")]


def test_no_method_name_is_compared_outside_its_definition():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in OWN_MODULES:
            continue
        offenders += [f"{relative}:{line}: {name}" for line, name in
                      compared_method_names(ast.parse(path.read_text(encoding="utf-8")))]
    assert not offenders, "method names compared outside their definitions:\n" + "\n".join(offenders)


def test_no_data_source_name_is_compared_outside_its_definition():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(SOURCE_PACKAGES):
            continue
        offenders += [f"{relative}:{line}: {name}" for line, name in
                      compared_method_names(ast.parse(path.read_text(encoding="utf-8")), set(SOURCES.names()))]
    assert not offenders, "data source names compared outside their definitions:\n" + "\n".join(offenders)
