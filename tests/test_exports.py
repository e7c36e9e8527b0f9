"""The public names of ``hsafast``: what type checkers see (the ``TYPE_CHECKING`` imports)
is what ``hsafast.NAME`` resolves at run time (``_EXPORTS``), from the same modules."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import hsafast


def type_checking_imports() -> dict[str, str]:
    """Name -> module of every import inside ``if TYPE_CHECKING:`` in hsafast/__init__.py."""
    tree = ast.parse(Path(hsafast.__file__).read_text(encoding="utf-8"))
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in ast.walk(node):
                if isinstance(stmt, ast.ImportFrom) and stmt.module:
                    names.update({alias.asname or alias.name: stmt.module for alias in stmt.names})
    return names


def test_type_checking_imports_match_the_exports() -> None:
    seen = type_checking_imports()
    exports = hsafast._EXPORTS
    assert sorted(set(exports) - set(seen)) == [], "exported but unknown to type checkers"
    assert sorted(set(seen) - set(exports)) == [], "known to type checkers but not exported"
    for name, module in seen.items():
        # the TYPE_CHECKING import may name a package that re-exports the defining module
        assert getattr(importlib.import_module(module), name) is getattr(hsafast, name), name


@pytest.mark.parametrize("name", sorted(hsafast._EXPORTS))
def test_every_export_resolves_and_is_listed(name: str) -> None:
    assert getattr(hsafast, name) is not None
    assert name in hsafast.__all__ and name in dir(hsafast)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        hsafast.no_such_name  # noqa: B018
