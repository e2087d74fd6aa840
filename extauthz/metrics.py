"""Prometheus metrics of the gateway, registered once per process."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DECISIONS = Counter(
    "keymint_decisions_total", "Check and /token decisions", ["result", "reason", "cache"]
)
CHECK_SECONDS = Histogram(
    "keymint_check_seconds",
    "Time to decide one Check",
    ["cache"],
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.05, 0.1, 0.5, 1.0, 2.5),
)
MINTS = Counter("keymint_mints_total", "Tokens minted (threshold signatures)", ["result"])
