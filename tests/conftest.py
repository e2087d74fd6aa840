"""Shared fixtures: where ../shared lives."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KEYMINT_SHARED", REPO.parent / "shared"))
VECTORS = SHARED / "vectors"
