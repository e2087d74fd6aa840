"""make bench-e2e: requests through the real front Envoy, over TLS, to the echo API behind keymint.

In one run, on the whole stack of `make demo` (3 signer processes, the gateway process, Envoy,
which reaches the gateway's Check port over mTLS):
- baseline: Envoy answering a route that never asks keymint (its JSON 404), same TLS connection;
- seen: a CI job's token already exchanged (the hot path) on a protected route;
- new: a never-seen CI token each time at a steady 20 per second (verify, policy, 2-of-3 mint);
- exchange: RFC 8693 POST /token, a new subject token each time.
The client (aiohttp) keeps one TLS connection open, as Envoy's callers would.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.replies import exchange_form
from tests.e2e.stack import FRONT_HOSTNAME, FRONT_LISTENER, E2EStack, e2e_stack

SEQUENTIAL = 300
NEW_RATE = 20
NEW_COUNT = 200
UNLIMITED = {"KEYMINT_RATE_PER_SECOND": "1000000", "KEYMINT_RATE_BURST": "1000000"}


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(stack: E2EStack) -> dict[str, list[float]]:
    context = ssl.create_default_context(cafile=str(stack.edge_ca))
    base = f"https://{FRONT_HOSTNAME}:{stack.front.port(FRONT_LISTENER)}"
    resolver = _FixedResolver(FRONT_HOSTNAME)
    connector = aiohttp.TCPConnector(ssl=context, resolver=resolver, limit=4)
    results: dict[str, list[float]] = {"baseline": [], "seen": [], "new": [], "exchange": []}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def timed(kind: str, method: str, path: str, expect: int, **kw: object) -> None:
            started = time.perf_counter()
            async with session.request(method, base + path, **kw) as reply:  # type: ignore[arg-type]
                body = await reply.read()
                assert reply.status == expect, (kind, reply.status, body[:300])
            results[kind].append((time.perf_counter() - started) * 1000)

        seen = {"authorization": f"Bearer {stack.oidc_token(jti='bench-seen')}"}
        for _ in range(20):  # warm-up: connection, caches, pools
            await timed("seen", "GET", "/deploy/v1/releases", 200, headers=seen)
            await timed("baseline", "GET", "/nowhere", 404)
        for values in results.values():
            values.clear()
        for _ in range(SEQUENTIAL):
            await timed("baseline", "GET", "/nowhere", 404)
            await timed("seen", "GET", "/deploy/v1/releases", 200, headers=seen)
        tokens = [stack.oidc_token(jti=f"bench-new-{i}") for i in range(NEW_COUNT)]
        start = time.perf_counter()
        for i, token in enumerate(tokens):
            delay = start + i / NEW_RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            headers = {"authorization": f"Bearer {token}"}
            await timed("new", "GET", "/deploy/v1/releases", 200, headers=headers)
        for i in range(NEW_COUNT // 2):
            form = exchange_form(stack.oidc_token(jti=f"bench-exchange-{i}"))
            await timed("exchange", "POST", "/token", 200, data=form)
            await asyncio.sleep(1 / NEW_RATE)
    return results


class _FixedResolver(aiohttp.abc.AbstractResolver):
    """The front listener's certificate names FRONT_HOSTNAME; it lives on 127.0.0.1."""

    def __init__(self, host: str) -> None:
        self._host = host

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, object]]:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": 2,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        return None


def main() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="keymint-bench-e2e-") as directory,
        # One identity sends the whole "seen" series as fast as it can: lift its rate limit.
        e2e_stack(Path(directory), dkg=True, extra_env=UNLIMITED) as stack,
    ):
        results = stack.background.run(measure(stack), timeout=600)
    summary: dict[str, float] = {}
    for kind, samples in results.items():
        p50, p99 = statistics.median(samples), pct(samples, 0.99)
        summary[f"{kind}_p50_ms"] = round(p50, 3)
        summary[f"{kind}_p99_ms"] = round(p99, 3)
        print(f"{kind:9s} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   ({len(samples)} requests)")
    summary["seen_overhead_p50_ms"] = round(summary["seen_p50_ms"] - summary["baseline_p50_ms"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
