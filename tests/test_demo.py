"""`make demo-check`: the demo's flows through the whole stack behave (a service, a CI job, its
token exchange, a Kubernetes workload, an engineer who self-mints with `extauthz login`...), and
it cleans up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_demo_check_runs_every_flow_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    flows = (
        "1. A service",
        "2. A CI job",
        "3. The same job",
        "4. A Kubernetes workload",
        "5. An engineer self-mints",
        "Every flow behaved.",
    )
    for flow in flows:
        assert flow in result.stdout
    leftovers = subprocess.run(
        ["pgrep", "-f", "keymint-demo-"], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout == ""
