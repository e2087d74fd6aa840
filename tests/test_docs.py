"""Operator documents name the tests behind their claims: every test they name must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted(
    [
        *REPO.glob("docs/*.md"),
        REPO / "README.md",
        *REPO.glob("*/README.md"),
        *REPO.glob("signer/*/README.md"),
    ]
)
# Test names here are sentences (test_a_..._is_refused); one-word `test_x` is a Rego test rule.
TEST_NAME = re.compile(r"\btest_[a-z0-9]+_[a-z0-9_]+\b")


def defined_tests() -> set[str]:
    """Test functions, and test modules (documents name both)."""
    names = set()
    for path in (REPO / "tests").rglob("test_*.py"):
        names.add(path.stem)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
    return names


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_test_a_document_names_exists(document: Path) -> None:
    named = set(TEST_NAME.findall(document.read_text()))
    missing = sorted(named - defined_tests())
    assert missing == [], f"{document.relative_to(REPO)} names tests that do not exist: {missing}"


def test_the_threat_model_names_tests() -> None:
    text = (REPO / "docs" / "threat-model.md").read_text()
    assert len(set(TEST_NAME.findall(text))) >= 40
