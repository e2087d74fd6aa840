"""Shared fixtures: where ../shared lives."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KEYMINT_SHARED", REPO.parent / "shared"))
VECTORS = SHARED / "vectors"

# The local stack (extauthz.dev) starts its processes with this process's environment; some tests
# start modules of their own in them (tests.signer.faulty_signer, benchmarks.standin_signing).
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A CLI run in-process (`configure_logging`) replaces the root handlers with one on the
    stderr pytest captured for that test; put the previous ones back, so a later test's log line
    neither goes to a closed stream nor escapes pytest's capture."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
