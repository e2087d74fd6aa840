"""make bench-sign: threshold signatures through 3 signer processes over gRPC with mTLS on loopback.

Measures, in one run: p50 and p99 latency of a verified 2-of-3 signature at a steady 50 per second;
the maximum signatures per second with many in flight; the in-process FROST time for the same
signature (one sign plus aggregate, no network); and one plain libsodium Ed25519 signature.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nacl.signing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.standin_signing import evidence_for, stand_in_cluster, token_message
from extauthz.dev.signers import SignerCluster
from signer.coordinator import Coordinator
from signer.frost import aggregate, commit, sign

STEADY_RATE = 50
STEADY_SECONDS = 10
BURST_SECONDS = 5
CONCURRENCY = 32


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def new_caller() -> tuple[str, object]:
    """A subject and its evidence, never used before: one credential backs a bounded number of
    mints (the signers' evidence budget), and a mint is what a new credential costs."""
    subject = f"bench-{next(_CALLERS)}"
    return subject, evidence_for(subject)


_CALLERS = itertools.count()


async def steady(coordinator: Coordinator, group_key: bytes) -> list[float]:
    latencies: list[float] = []

    async def one() -> None:
        subject, evidence = new_caller()
        message = token_message(group_key, subject=subject)
        started = time.perf_counter()
        await coordinator.sign(message, evidence=evidence)
        latencies.append((time.perf_counter() - started) * 1000)

    tasks = []
    start = time.perf_counter()
    for i in range(STEADY_RATE * STEADY_SECONDS):
        delay = start + i / STEADY_RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies


async def burst(coordinator: Coordinator, group_key: bytes) -> float:
    done = 0
    stop_at = time.perf_counter() + BURST_SECONDS

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            subject, evidence = new_caller()
            await coordinator.sign(token_message(group_key, subject=subject), evidence=evidence)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done / (time.perf_counter() - started)


def in_process_ms(cluster: SignerCluster) -> float:
    shares = cluster.shares[:2]
    samples = []
    for _ in range(200):
        message = token_message(cluster.package.group_public_key, subject="bench")
        started = time.perf_counter()
        nonces = [commit(s) for s in shares]
        commitment_list = [n.commitment for n in nonces]
        z = [sign(s, n, message, commitment_list) for s, n in zip(shares, nonces, strict=True)]
        aggregate(commitment_list, message, cluster.package, z)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def ed25519_ms() -> float:
    key = nacl.signing.SigningKey.generate()
    message = b"x" * 400
    samples = []
    for _ in range(2000):
        started = time.perf_counter()
        key.sign(message)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def measure(cluster: SignerCluster) -> dict[str, float]:
    coordinator = Coordinator(
        endpoints=cluster.endpoints(), tls=cluster.coordinator_tls, threshold=cluster.threshold
    )
    await coordinator.start()
    group_key = cluster.package.group_public_key
    try:
        for _ in range(100):  # warm up connections and pools
            subject, evidence = new_caller()
            await coordinator.sign(token_message(group_key, subject=subject), evidence=evidence)
        latencies = await steady(coordinator, group_key)
        rate = await burst(coordinator, group_key)
    finally:
        await coordinator.close()
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
        "max_per_s": rate,
        "samples": len(latencies),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        cluster = stand_in_cluster(Path(directory), 2, 3)
        cluster.start()
        try:
            figures = asyncio.run(measure(cluster))
            frost_ms = in_process_ms(cluster)
        finally:
            cluster.stop()
    plain_ms = ed25519_ms()
    print(f"2-of-3 over gRPC+mTLS, steady {STEADY_RATE}/s for {STEADY_SECONDS}s:")
    print(f"  p50 {figures['p50_ms']:.2f} ms   p99 {figures['p99_ms']:.2f} ms")
    print(f"  max {figures['max_per_s']:.0f} signatures/s ({CONCURRENCY} in flight)")
    print(f"in-process FROST 2-of-3 (2 signs + aggregate, no network): {frost_ms:.3f} ms")
    print(f"plain Ed25519 signature (libsodium): {plain_ms * 1000:.1f} us")
    print(
        json.dumps(
            {
                "p50_ms": round(figures["p50_ms"], 3),
                "p99_ms": round(figures["p99_ms"], 3),
                "max_per_s": round(figures["max_per_s"], 1),
                "steady_rate_per_s": STEADY_RATE,
                "samples": figures["samples"],
                "in_process_frost_ms": round(frost_ms, 3),
                "ed25519_sign_ms": round(plain_ms, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
