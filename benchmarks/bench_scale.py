"""make bench-scale: how the cost of a Check grows with what keymint holds.

In one run:
- identities: the cached Check (`Pipeline.check` on a hit, in the gateway's own process shape:
  the in-process stack of extauthz/dev/inprocess.py, real signers) with 1k, 100k and 1M cached
  credentials, each a credential of its own (its own rate-limit bucket too), looked up in random
  order; and the resident memory each cached credential adds (RSS over the entries stored);
- bindings: the JSON policy's decision (`PolicyEngine.judge`) for a GitHub Actions identity and
  for a SPIFFE identity with 10 and 10,000 bindings in the policy (one binding per repository,
  one per namespace wildcard): the policy indexes its bindings, so a request looks at its own;
- signers: the threshold signature of a mint (the coordinator's round trip through t of n signer
  processes over mTLS, as a mint makes it) with n = 3, 5, 9, 15 and t = n/2 + 1, paced.

The cached entries are the real response of a real mint, one per credential with its own token
bytes (same length), stored as `Pipeline.check` stores them; only their number is synthetic.
Results: docs/performance/bench-scale.json and bench-scale.png; the last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest  # noqa: E402

from benchmarks.standin_signing import evidence_for, stand_in_cluster, token_message  # noqa: E402
from extauthz.dev.calls import check_request  # noqa: E402
from extauthz.dev.inprocess import running_stack  # noqa: E402
from extauthz.dev.settings import DEPLOY, SCOPES, TRUST_DOMAIN  # noqa: E402
from extauthz.dev.signers import SignerCluster  # noqa: E402
from extauthz.model import Route  # noqa: E402
from extauthz.policy import AuthzRequest, Limits, PolicyEngine  # noqa: E402
from extauthz.policy.loader import compile_policy  # noqa: E402
from extauthz.server.hotcache import HotCache, HotEntry, request_fingerprint  # noqa: E402
from extauthz.server.pipeline import Pipeline  # noqa: E402
from signer.coordinator import Coordinator  # noqa: E402

OUT = HERE.parent / "docs" / "performance"


@dataclass(frozen=True)
class Sizes:
    identities: tuple[int, ...] = (1_000, 100_000, 1_000_000)
    lookups: int = 20_000  # per size and round
    bindings: tuple[int, ...] = (10, 10_000)
    decisions: int = 5_000
    signers: tuple[int, ...] = (3, 5, 9, 15)
    signatures: int = 60  # per signer count, paced
    rate: float = 20.0


QUICK = Sizes(
    identities=(100, 1_000),
    lookups=500,
    bindings=(10, 100),
    decisions=200,
    signers=(3,),
    signatures=5,
)
ROUNDS = 3


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# --- identities ------------------------------------------------------------------------------


def variant(text: str, i: int) -> str:
    """`text` with its last 12 characters replaced by `i`: the same length, another value."""
    return f"{text[:-12]}{i:012d}"


class Identities:
    """Cached credentials stored as a hit would find them: one real response per credential."""

    def __init__(self, pipeline: Pipeline, bearer: str, response: bytes, minted: str) -> None:
        self.pipeline = pipeline
        self.bearer = bearer
        self.response = response
        self.minted = minted

    def request(self, i: int) -> CheckRequest:
        return check_request(bearer=variant(self.bearer, i), route_key="deploy")

    async def fill(self, total: int) -> HotCache:
        """A hot cache of `total` credentials, filled letting the gateway's own tasks run (its
        shared-state sync: a gateway whose revocations went stale answers 503 to everything)."""
        hot = HotCache(max_entries=total + 1)  # the bound is not what is measured
        minted = self.minted.encode()
        for i in range(total):
            if i % 2000 == 0:
                await asyncio.sleep(0.001)
            key = request_fingerprint(self.request(i))
            assert key is not None
            response = self.response.replace(minted, variant(self.minted, i).encode())
            entry = HotEntry(
                response=response,
                fresh_until=time.time() + 3600,
                jti=f"{i:032x}",
                subject=f"bench-subject-{i}",
                rate_key=f"github\x1fbench\x1f{i}",
            )
            hot.put(key, entry, generation=hot.generation, now=0.0)
        return hot

    async def lookup_us(self, hot: HotCache, lookups: int) -> float:
        """Median microseconds of a hit on `hot`, over `lookups` of its credentials drawn at
        random."""
        self.pipeline.hot = hot
        chosen = [random.randrange(len(hot)) for _ in range(lookups)]
        samples = []
        for start in range(0, lookups, 500):
            await asyncio.sleep(0.001)  # the gateway's own tasks run between batches, untimed
            batch = [self.request(i) for i in chosen[start : start + 500]]
            started = time.perf_counter()
            for request in batch:
                response = await self.pipeline.check(request)
                assert response.status.code == 0, response.denied_response.body
            samples.append((time.perf_counter() - started) / len(batch) * 1e6)
        return statistics.median(samples)


async def identities(directory: Path, sizes: Sizes) -> dict[str, Any]:
    """One hot cache per size, all held at once and measured in alternation (the machine's
    noise moves between rounds; the best round of each is kept)."""
    async with running_stack(
        directory, KEYMINT_RATE_PER_SECOND="1000000", KEYMINT_RATE_BURST="1000000"
    ) as stack:
        pipeline = stack.gateway.pipeline
        bearer = stack.issuer.mint()
        request = check_request(bearer=bearer, route_key="deploy")
        first = await stack.check(request)
        assert first.status.code == 0, first
        minted = first.ok_response.headers[-1].header.value.removeprefix("Bearer ")
        hit = await pipeline.check(request)
        assert hit.dynamic_metadata.fields["keymint"].struct_value.fields["cache"].string_value
        filler = Identities(pipeline, bearer, hit.SerializeToString(), minted)
        caches: dict[int, HotCache] = {}
        rss_per_entry = 0.0
        for size in sorted(sizes.identities):
            gc.collect()
            before = rss_bytes()
            caches[size] = await filler.fill(size)
            gc.collect()
            rss_per_entry = (rss_bytes() - before) / size  # the largest fill's is kept
        await asyncio.sleep(1.0)  # a state sync after the fills
        rounds: dict[int, list[float]] = {size: [] for size in caches}
        for _ in range(ROUNDS + 2):
            for size, hot in caches.items():
                rounds[size].append(await filler.lookup_us(hot, sizes.lookups))
        per_size = {str(size): min(values) for size, values in rounds.items()}
        for size in caches:
            print(
                f"cached Check with {size:>9,} cached credentials: {per_size[str(size)]:6.2f} us",
                flush=True,
            )
        print(f"RSS per cached credential: {rss_per_entry:.0f} bytes", flush=True)
        pipeline.hot = HotCache()
    return {"check_us": per_size, "rss_per_token_bytes": rss_per_entry}


# --- bindings --------------------------------------------------------------------------------


def policy_with(count: int, issuer: str) -> dict[str, Any]:
    """`count` bindings: half for GitHub repositories, half for namespace wildcards; the
    identities measured match the last of each."""
    half = max(1, count // 2)
    bindings: list[dict[str, Any]] = []
    for i in range(half):
        bindings.append(
            {
                "name": f"repo-{i}",
                "role": "deployer",
                "match": {
                    "kind": "github_actions",
                    "issuer": issuer,
                    "claims": {"repository_id": str(1000 + i), "repository_owner_id": "65"},
                },
                "routes": {"audiences": [DEPLOY]},
            }
        )
        bindings.append(
            {
                "name": f"team-{i}",
                "role": "deployer",
                "match": {"kind": "spiffe", "ids": [f"spiffe://{TRUST_DOMAIN}/ns/team-{i}/sa/*"]},
                "routes": {"audiences": [DEPLOY]},
            }
        )
    return {
        "version": 1,
        "roles": {"deployer": {"scopes": ["deploy:read"], "max_ttl_seconds": 600}},
        "audiences": {DEPLOY: {"route_keys": ["deploy"]}},
        "bindings": bindings,
    }


def decision_us(engine: PolicyEngine, request: AuthzRequest, count: int) -> float:
    samples = []
    for _ in range(ROUNDS * 3):
        started = time.perf_counter()
        for _ in range(count):
            engine.judge(request)
        samples.append((time.perf_counter() - started) / count * 1e6)
    return min(samples)


async def bindings(directory: Path, sizes: Sizes) -> dict[str, Any]:
    """The identities are verified for real once (a GitHub OIDC token, an X.509-SVID)."""
    async with running_stack(directory) as stack:
        identifier = stack.gateway.pipeline._identifier
        results: dict[str, dict[str, float]] = {"github": {}, "spiffe": {}}
        route = Route("api.internal", "/v1/things", "GET", {"route": "deploy"})
        for count in sizes.bindings:
            half = max(1, count // 2)
            token = stack.issuer.mint(
                {"repository_id": str(1000 + half - 1), "repository_owner_id": "65"}
            )
            github = await identifier.identify(check_request(bearer=token))
            svid = stack.svid(f"/ns/team-{half - 1}/sa/api")
            spiffe = await identifier.identify(check_request(certificate=svid))
            policy = compile_policy(policy_with(count, stack.issuer.issuer))
            engine = PolicyEngine(limits=Limits(frozenset(SCOPES.split())), policy=policy)
            for name, identity in (("github", github), ("spiffe", spiffe)):
                request = AuthzRequest(identity, route)
                assert not hasattr(engine.judge(request).decision, "reason"), name
                results[name][str(count)] = decision_us(engine, request, sizes.decisions)
                print(
                    f"policy decision, {name:6s} identity, {count:>6,} bindings: "
                    f"{results[name][str(count)]:6.2f} us",
                    flush=True,
                )
    return results


# --- signers ---------------------------------------------------------------------------------


async def signatures(cluster: SignerCluster, sizes: Sizes) -> list[float]:
    assert cluster.package is not None
    group_key = cluster.package.group_public_key
    coordinator = Coordinator(
        endpoints=cluster.endpoints(), tls=cluster.coordinator_tls, threshold=cluster.threshold
    )
    await coordinator.start()
    latencies: list[float] = []
    try:
        for i in range(10 + sizes.signatures):  # 10 to warm connections and pools
            subject = f"scale-{len(cluster.signers)}-{i}"
            message = token_message(group_key, subject=subject)
            started = time.perf_counter()
            await coordinator.sign(message, evidence=evidence_for(subject))
            if i >= 10:
                latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(max(0.0, 1 / sizes.rate - (time.perf_counter() - started)))
    finally:
        await coordinator.close()
    return latencies


def signer_counts(directory: Path, sizes: Sizes) -> dict[str, dict[str, float]]:
    results = {}
    for n in sizes.signers:
        t = n // 2 + 1
        cluster = stand_in_cluster(directory / f"signers-{n}", t, n)
        cluster.start()
        try:
            latencies = asyncio.run(signatures(cluster, sizes))
        finally:
            cluster.stop()
        ordered = sorted(latencies)
        results[f"{t}-of-{n}"] = {
            "t": t,
            "n": n,
            "p50_ms": statistics.median(latencies),
            "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "samples": len(latencies),
        }
        print(
            f"threshold signature {t}-of-{n}: p50 {results[f'{t}-of-{n}']['p50_ms']:.2f} ms, "
            f"p99 {results[f'{t}-of-{n}']['p99_ms']:.2f} ms ({len(latencies)} at {sizes.rate}/s)",
            flush=True,
        )
    return results


# --- report ----------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    check = results["identities"]["check_us"]
    axes[0].plot([int(k) for k in check], list(check.values()), marker="o")
    axes[0].set_xscale("log")
    axes[0].set_ylim(bottom=0)
    axes[0].set_xlabel("cached credentials")
    axes[0].set_ylabel("cached Check, in process (us)")
    axes[0].set_title("identities")
    for name, points in results["bindings"].items():
        axes[1].plot([int(k) for k in points], list(points.values()), marker="o", label=name)
    axes[1].set_xscale("log")
    axes[1].set_ylim(bottom=0)
    axes[1].set_xlabel("bindings in the policy")
    axes[1].set_ylabel("policy decision (us)")
    axes[1].set_title("bindings")
    axes[1].legend()
    signers = results["signers"]
    ns = [v["n"] for v in signers.values()]
    axes[2].plot(ns, [v["p50_ms"] for v in signers.values()], marker="o", label="p50")
    axes[2].plot(ns, [v["p99_ms"] for v in signers.values()], marker="o", label="p99")
    axes[2].set_xticks(ns)
    axes[2].set_xticklabels(list(signers))
    axes[2].set_ylim(bottom=0)
    axes[2].set_xlabel("signers (t-of-n)")
    axes[2].set_ylabel("threshold signature (ms)")
    axes[2].set_title("signers")
    axes[2].legend()
    figure.suptitle("make bench-scale: cost as keymint grows")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def summary_of(results: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    check = results["identities"]["check_us"]
    low, high = str(min(sizes.identities)), str(max(sizes.identities))
    few, many = str(min(sizes.bindings)), str(max(sizes.bindings))
    ratio: Callable[[dict[str, float]], float] = lambda d: round(d[many] / d[few], 3)  # noqa: E731
    summary: dict[str, Any] = {
        "identities_1m_vs_1k": round(check[high] / check[low], 3),
        "bindings_10k_vs_10": max(
            ratio(results["bindings"]["github"]), ratio(results["bindings"]["spiffe"])
        ),
        "bindings_10k_vs_10_github": ratio(results["bindings"]["github"]),
        "bindings_10k_vs_10_spiffe": ratio(results["bindings"]["spiffe"]),
        "rss_per_token_bytes": round(results["identities"]["rss_per_token_bytes"]),
        "cached_check_us": {k: round(v, 2) for k, v in check.items()},
    }
    for name, figures in results["signers"].items():
        summary[f"mint_sign_p50_ms_{name}"] = round(figures["p50_ms"], 3)
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: the harness runs")
    parser.add_argument("--out", type=Path, default=OUT, help="where results and plots go")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="keymint-bench-scale-") as directory:
        root = Path(directory)
        (root / "identities").mkdir()
        (root / "bindings").mkdir()
        results: dict[str, Any] = {
            "identities": asyncio.run(identities(root / "identities", sizes)),
            "bindings": asyncio.run(bindings(root / "bindings", sizes)),
            "signers": signer_counts(root, sizes),
        }
    results["started_utc"] = started
    results["cpu_count"] = os.cpu_count()
    results["sizes"] = sizes.__dict__
    summary = summary_of(results, sizes)
    results["summary"] = summary
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-scale.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "bench-scale.png")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
