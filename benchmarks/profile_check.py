"""python benchmarks/profile_check.py: what one Check costs inside the gateway, path by path.

In the in-process stack of extauthz/dev/inprocess.py (the gateway's own objects, 3 real signer
processes), with no gRPC around it, `Pipeline.check` on:
- hit: a credential seen on this route (the hot cache), one request object over and over;
- hit_parsed: the same, each request freshly parsed from the wire as the server hands it over
  (upb builds the Python objects of the fields a Check reads on first access);
- newpath: a seen credential on a route never requested (the identity cache, policy, the
  minter's token cache);
- newpath_unverified: the same with the identity cache emptied before every request (what a
  seen credential on a new path cost before the identity cache: its signature verified again).
With `--redis`, the gateway shares its state and tokens through a redis-server as replicas do, and
- newpath_shared_only: newpath without the replica's own token cache in front of Redis (what a
  seen credential on a new path cost before it: a Redis read and a signature check per Check).
Each figure is the best of ROUNDS batches (microseconds per Check). `--profile` adds the top of
a cProfile of each path (cumulative time), which is how docs/performance/analysis.md found what
to remove. The gRPC server around a Check costs more than any of these: bench-check reports it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import json
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from extauthz.dev.calls import check_request
from extauthz.dev.inprocess import running_stack
from extauthz.dev.redis import RedisProcess, write_credentials
from extauthz.server.pipeline import Pipeline

ROUNDS = 7
BATCH = 300


async def best_us(
    pipeline: Pipeline, make: Callable[[], CheckRequest], before: Callable[[], None]
) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        requests = [make() for _ in range(BATCH)]
        started = time.perf_counter()
        for request in requests:
            before()
            response = await pipeline.check(request)
            assert response.status.code == 0, response.denied_response.body
        best = min(best, (time.perf_counter() - started) / BATCH * 1e6)
    return best


async def profiled(
    pipeline: Pipeline, make: Callable[[], CheckRequest], before: Callable[[], None]
) -> str:
    requests = [make() for _ in range(BATCH * 3)]
    profile = cProfile.Profile()
    profile.enable()
    for request in requests:
        before()
        await pipeline.check(request)
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(25)
    return out.getvalue()


async def measure(directory: Path, profile: bool, shared: dict[str, str]) -> dict[str, float]:
    async with running_stack(
        directory, KEYMINT_RATE_PER_SECOND="1000000", KEYMINT_RATE_BURST="1000000", **shared
    ) as stack:
        pipeline = stack.gateway.pipeline
        token = stack.issuer.mint()
        seen = check_request(bearer=token, route_key="deploy")
        first = await stack.check(seen)
        assert first.status.code == 0, first
        paths = itertools.count()

        def new_path() -> CheckRequest:
            return check_request(bearer=token, route_key="deploy", path=f"/v1/r/{next(paths)}")

        def nothing() -> None:
            return None

        wire = seen.SerializeToString()
        cases: dict[str, tuple[Callable[[], CheckRequest], Callable[[], None]]] = {
            "hit": (lambda: seen, nothing),
            # as a server receives it: parsed from the wire, no field read yet
            "hit_parsed": (lambda: CheckRequest.FromString(wire), nothing),
            "newpath": (new_path, nothing),
            "newpath_unverified": (new_path, pipeline.identities.clear),
        }
        minter = pipeline._minter  # a benchmark's look inside: the replica's own token cache
        own_tokens = minter._local
        if shared:
            cases["newpath_shared_only"] = (new_path, nothing)
        figures = {}
        for name, (make, before) in cases.items():
            minter._local = None if name == "newpath_shared_only" else own_tokens
            await pipeline.check(make())  # warm
            figures[f"{name}_us"] = await best_us(pipeline, make, before)
            print(f"{name:20s} {figures[f'{name}_us']:8.1f} us per Check", flush=True)
            if profile:
                print(await profiled(pipeline, make, before), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="print a cProfile of each path")
    parser.add_argument(
        "--redis", action="store_true", help="share state and tokens through a redis-server"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keymint-profile-") as directory:
        shared: dict[str, str] = {}
        redis_server = None
        if args.redis:
            (Path(directory) / "redis").mkdir()
            redis_server = RedisProcess(Path(directory) / "redis", {"gateway": "profile-password"})
            redis_server.start()
            credentials = Path(directory) / "redis.credentials"
            write_credentials(credentials, "gateway", "profile-password")
            shared = {
                "KEYMINT_REDIS_URL": redis_server.url,
                "KEYMINT_REDIS_CREDENTIALS_FILE": str(credentials),
            }
        try:
            figures = asyncio.run(measure(Path(directory), args.profile, shared))
        finally:
            if redis_server is not None:
                redis_server.stop()
    print(json.dumps({k: round(v, 2) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
