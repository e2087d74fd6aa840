"""python benchmarks/bench_cached_ab.py [--base REV]: the cached Check, this tree against REV.

bench-check's cached series (one seen credential, 16 in flight, mTLS, a client process) against
servers started side by side and measured in alternation, so that a shared machine's noise falls
on all of them alike: a do-nothing grpc.aio server (the baseline); the same answering the
gateway's own 1.3 kB response to a hit, then also checking Envoy's identity as the gateway does
(what the answer and the allow-list cost, apart from keymint); the gateway as of REV (default: the
commit before issue 11's cached-path work) and the gateway of this working tree.
Each keeps its best round (throughput, and server CPU per Check from /proc). The gateway of REV
runs from `git archive REV` in a temporary directory, with the same signers and settings.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_check import (  # noqa: E402
    GATEWAY_SERVER,
    NOOP_SERVER,
    channel_for,
    start_server,
    throughput,
)
from envoy.service.auth.v3 import external_auth_pb2_grpc  # noqa: E402

from extauthz.dev.calls import check_request  # noqa: E402
from extauthz.dev.certs import pem  # noqa: E402
from extauthz.dev.github import LocalOidcIssuer  # noqa: E402
from extauthz.dev.settings import OIDC_AUDIENCE, root_ca, stack_env, write_trust_root  # noqa: E402
from extauthz.dev.signers import SignerCluster  # noqa: E402

BASE = "2a43b4c"  # main before issue 11's cached-path changes
ANSWERING = NOOP_SERVER.replace(
    "OK = CheckResponse(status=status_pb2.Status(code=0))",
    "import base64\nOK = CheckResponse.FromString(base64.b64decode(os.environ['NOOP_ANSWER']))",
)
assert ANSWERING != NOOP_SERVER
ROUNDS = 5


def start_from(tree: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """GATEWAY_SERVER run from `tree` (its packages first on the path)."""
    process = subprocess.Popen(
        [sys.executable, "-c", GATEWAY_SERVER],
        env={**os.environ, **env, "PYTHONPATH": str(tree)},
        stdout=subprocess.PIPE,
        cwd=tree,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line.startswith("ready"):
        process.kill()
        raise RuntimeError(f"gateway from {tree} did not start: {line!r}")
    return process, int(line.split()[1])


async def measure(directory: Path, base_tree: Path) -> dict[str, dict[str, float]]:
    issuer = LocalOidcIssuer(clock=time.time, audience=OIDC_AUDIENCE)
    await issuer.start()
    (directory / "trust-bundle.pem").write_bytes(pem(root_ca("prod.test").certificate))
    cluster = SignerCluster(directory, 2, 3)
    env = stack_env(directory, issuer.issuer)
    for process in cluster.signers.values():
        process.env.update(env)
    await asyncio.to_thread(cluster.start)
    assert cluster.package is not None
    gateway_env = {
        **env,
        "KEYMINT_TRUST_ROOT": str(write_trust_root(directory, cluster.package.group_public_key)),
        "KEYMINT_SIGNERS": ",".join(f"{i}={p.address}" for i, p in cluster.signers.items()),
        "KEYMINT_RATE_PER_SECOND": "1000000",
        "KEYMINT_RATE_BURST": "1000000",
    }
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        servers["noop"] = await asyncio.to_thread(
            start_server, NOOP_SERVER, {**env, "NOOP_MODE": "mtls"}
        )
        for name, tree in (("base", base_tree), ("this", REPO)):
            state = directory / f"gateway-{name}"
            servers[name] = await asyncio.to_thread(
                start_from,
                tree,
                {
                    **gateway_env,
                    "KEYMINT_STATE_DIR": str(state),
                    "KEYMINT_AUDIT_LOG": str(state / "audit.jsonl"),
                },
            )
        seen = check_request(bearer=issuer.mint(), route_key="deploy")
        # The do-nothing server again, answering what the gateway answers a hit (its response,
        # 1.3 kB: the minted token and the metadata), then with the gateway's allow-list of Envoy
        # identities too: what the answer and the check of the caller cost, apart from keymint.
        async with channel_for(servers["this"][1], directory) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            await stub.Check(seen)
            answer = await stub.Check(seen)
        wire = base64.b64encode(answer.SerializeToString()).decode()
        for name, mode in (("noop+answer", "mtls"), ("noop+answer+allowlist", "mtls+allowlist")):
            servers[name] = await asyncio.to_thread(
                start_server, ANSWERING, {**env, "NOOP_MODE": mode, "NOOP_ANSWER": wire}
            )
        best: dict[str, dict[str, float]] = {
            name: {"per_s": 0.0, "cpu_us": float("inf")} for name in servers
        }
        for _ in range(ROUNDS):
            for name, (process, port) in servers.items():
                rate, _latency, cpu_us = await throughput(port, seen, directory, process)
                best[name]["per_s"] = max(best[name]["per_s"], rate)
                best[name]["cpu_us"] = min(best[name]["cpu_us"], cpu_us)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait()
        await asyncio.to_thread(cluster.stop)
        await issuer.stop()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base", default=BASE, help="the git revision to compare against")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keymint-ab-") as directory:
        root = Path(directory)
        base_tree = root / "base"
        base_tree.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.base], cwd=REPO, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(base_tree)], input=archive, check=True)
        (root / "shared").symlink_to(REPO.parent / "shared")  # the test vectors, as ../shared
        work = root / "work"
        work.mkdir()
        best = asyncio.run(measure(work, base_tree))
    noop = best["noop"]
    for name, figures in best.items():
        print(
            f"{name:22s} {figures['per_s']:7.0f} checks/s ({figures['per_s'] / noop['per_s']:.2f} "
            f"of do-nothing), server CPU {figures['cpu_us']:5.0f} us per Check "
            f"({figures['cpu_us'] / noop['cpu_us']:.2f} of do-nothing)"
        )
    print(
        json.dumps(
            {
                "base": args.base,
                "base_vs_noop": round(best["base"]["per_s"] / noop["per_s"], 3),
                "this_vs_noop": round(best["this"]["per_s"] / noop["per_s"], 3),
                "noop_cpu_us": round(noop["cpu_us"], 1),
                "noop_answer_cpu_us": round(best["noop+answer"]["cpu_us"], 1),
                "noop_answer_allowlist_cpu_us": round(best["noop+answer+allowlist"]["cpu_us"], 1),
                "base_cpu_us": round(best["base"]["cpu_us"], 1),
                "this_cpu_us": round(best["this"]["cpu_us"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
