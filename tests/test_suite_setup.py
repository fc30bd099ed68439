"""The suite's own rule: shared setup comes from fixtures, never from importing conftest.

conftest.py is a plugin pytest loads once; a module that imports it as a library gets the
setup outside pytest's control (scopes, teardown) and invites copies of it.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def conftest_imports(source: str) -> list[int]:
    """Return the lines of ``source`` that import conftest."""
    def names(node: ast.AST) -> list[str]:
        if isinstance(node, ast.ImportFrom):
            return [node.module or ""]
        return [alias.name for alias in node.names] if isinstance(node, ast.Import) else []

    return [node.lineno for node in ast.walk(ast.parse(source))
            if "conftest" in names(node)]


def test_the_check_finds_both_forms_of_import():
    assert conftest_imports("import conftest\nfrom conftest import make_settings\n") == [1, 2]
    assert conftest_imports("from shim.record.settings import STORE_ID\n") == []


def test_no_test_module_imports_conftest():
    found = [f"{path.name}:{line}" for path in sorted(TESTS.rglob("*.py"))
             if path.name != "conftest.py"
             for line in conftest_imports(path.read_text(encoding="utf-8"))]
    assert found == []
