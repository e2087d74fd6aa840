"""Prometheus metrics of the gateway, registered once per process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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
JWKS_FETCHES = Counter(
    "keymint_jwks_fetches_total",
    "Fetches of a token issuer's signing keys (JWKS), by result (ok, error)",
    ["issuer", "result"],
)


class KeyTimes(Collector):
    """keymint_key_publish_lead_remaining_seconds{kid}: seconds until the published next key may
    be activated; keymint_key_retire_remaining_seconds{kid}: until a retiring key's last token
    expires and it leaves the JWKS. Read from the key ring when scraped (`source`: the next key
    and when its lead ends, the retiring keys and when they go), so a key gone from the ring
    leaves no series behind."""

    def __init__(self) -> None:
        self.source: Callable[[], tuple[tuple[str, float] | None, Mapping[str, float]]] | None = (
            None
        )
        self.clock: Callable[[], float] = time.time

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lead = GaugeMetricFamily(
            "keymint_key_publish_lead_remaining_seconds",
            "Seconds until the published next key may be activated (its publish lead ends)",
            labels=["kid"],
        )
        retire = GaugeMetricFamily(
            "keymint_key_retire_remaining_seconds",
            "Seconds until a retiring key's last token expires and it leaves the JWKS",
            labels=["kid"],
        )
        if self.source is not None:
            following, retiring = self.source()
            now = self.clock()
            if following is not None:
                lead.add_metric([following[0]], max(0.0, following[1] - now))
            for kid, retire_at in sorted(retiring.items()):
                retire.add_metric([kid], max(0.0, retire_at - now))
        yield lead
        yield retire


KEY_TIMES = KeyTimes()
REGISTRY.register(KEY_TIMES)
READY = Gauge("keymint_ready", "1 while the gateway is ready (/readyz), else 0")
