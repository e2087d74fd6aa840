"""`signer serve` with phase_timer's wall-clock timers around its Sign path (profile_mint.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import phase_timer

from signer.cli import main

if __name__ == "__main__":
    phase_timer.install(phase_timer.signer_targets())
    sys.exit(main(["serve"]))
