"""make bench-e2e: the whole path through the real front Envoy, against its limits, in one run.

The stack is extauthz.dev.replicas': the front Envoy (envoy/envoy.yaml), 2 gateway replicas
(`extauthz serve`), 3 signer processes (2-of-3) and redis-server, all on loopback. The load
generator is wrk (Debian's `wrk`), HTTP/1.1 over TLS with kept-alive connections, driven by
benchmarks/wrk_plan.lua: it is C, so it takes far less of the two cores than a Python client
would, its Lua hook gives every request its own credential and path, and it reports the
latency distribution (p50, p99, p99.9).

Scenarios on the keymint stack:
- seen: credentials seen before (8 CI tokens, exchanged at warm-up): the hot path;
- newpath: a seen credential on a path never requested (REST ids in the URL);
- new: a credential never seen before on every request (verify, policy, a 2-of-3 mint);
- mix: 95% seen, 4% new path, 1% new credential;
- token: RFC 8693 POST /token with a subject token never seen before.
Baselines behind an Envoy with the very same configuration, started beside it:
- noop: a do-nothing grpc.aio ext_authz server (2 of them, as there are 2 replicas, over the
  same mTLS) in keymint's place;
- noop_uds: the same do-nothing servers over Unix sockets (no TLS, no TCP): the transport's cost;
- plain: Envoy with no ext_authz at all;
- jwt: Envoy's own jwt_authn verifying one of keymint's tokens in place of ext_authz.
Throughput runs keep CONNECTIONS requests in flight (closed loop), alternating the servers for
ROUNDS rounds and keeping each one's best (noise only ever makes a round worse); latency runs
send one request at a time; `new` and `token` are paced at PACED_RATE per second. For every run
the CPU time of each process (from /proc, less what it spends idle, measured before the runs) and
its RSS at the end are kept.

Results: docs/performance/bench-e2e.json and the latency plot bench-e2e-latency.png (read by
`make bench-report`); the last line printed is JSON with the headline figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_check import NOOP_SERVER, start_server  # noqa: E402
from procstat import sample  # noqa: E402

from extauthz.dev.calls import exchange_form  # noqa: E402
from extauthz.dev.envoy import EnvoyProcess  # noqa: E402
from extauthz.dev.replicas import ReplicaSettings, ReplicasStack, replicas_stack  # noqa: E402
from extauthz.dev.settings import DEPLOY  # noqa: E402

REPO = HERE.parent
OUT = REPO / "docs" / "performance"
PLAN = HERE / "wrk_plan.lua"
PATH = "/deploy/v1/releases"
SEEN_CREDENTIALS = 8
# The stack's replicas: rate limits out of the way (the load is the point), state synced every
# 0.25 s, a new mint's signing deadline 2 s (the settings of tests/faults/stack.py, which the
# published results were measured with). The replicas and the signers run this tree's code.
STACK = ReplicaSettings(
    replicas=2,
    gateway_env={
        "PYTHONPATH": str(REPO),
        "KEYMINT_RATE_PER_SECOND": "100000",
        "KEYMINT_RATE_BURST": "100000",
        "KEYMINT_STATE_SYNC_SECONDS": "0.25",
        "KEYMINT_STATE_MAX_STALENESS_SECONDS": "2.0",
        "KEYMINT_SIGN_TIMEOUT_SECONDS": "2.0",
    },
    signer_env={"PYTHONPATH": str(REPO)},
)


@dataclass(frozen=True)
class Sizes:
    seconds: float = 5.0  # each throughput run
    latency_seconds: float = 4.0  # each one-at-a-time run
    connections: int = 16
    rounds: int = 3
    paced_rate: float = 20.0  # new credentials and /token exchanges per second
    paced_seconds: float = 10.0


QUICK = Sizes(seconds=1.0, latency_seconds=1.0, connections=4, rounds=1, paced_seconds=1.0)


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("bench-e2e needs wrk: apt-get install wrk (make apt installs it)")
    return found


class Runner:
    """Runs wrk against one Envoy listener and samples the processes around it."""

    def __init__(self, directory: Path, pids: Mapping[str, int]) -> None:
        self.directory = directory
        self.pids = dict(pids)
        self.count = 0
        self.idle: dict[str, float] = {}  # CPU seconds per second each process uses unasked

    def measure_idle(self, seconds: float) -> None:
        """What each process spends with no request at all (state syncs, health checks, probes):
        subtracted from every run, so that CPU per request is the requests' own."""
        before, started = sample(self.pids), time.perf_counter()
        time.sleep(seconds)
        after, elapsed = sample(self.pids), time.perf_counter() - started
        self.idle = {
            name: (after[name].cpu_seconds - before[name].cpu_seconds) / elapsed
            for name in before
            if name in after
        }

    def run(
        self,
        url: str,
        mode: str,
        *,
        seconds: float,
        connections: int,
        delay_ms: float = 0.0,
    ) -> dict[str, Any]:
        self.count += 1
        out = self.directory / f"wrk-{self.count}.json"
        env = {
            **os.environ,
            "BENCH_MODE": mode,
            "BENCH_DIR": str(self.directory),
            "BENCH_OUT": str(out),
            "BENCH_PATH": PATH,
            "BENCH_ROUND": str(self.count),
            "BENCH_DELAY_MS": str(delay_ms),
            "BENCH_AUDIENCE": urllib.parse.quote(DEPLOY, safe=""),
        }
        before = sample(self.pids)
        started = time.perf_counter()
        subprocess.run(
            [
                wrk_binary(),
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(PLAN),
                url,
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - started
        after = sample(self.pids)
        result: dict[str, Any] = json.loads(out.read_text())
        requests = max(1, result["requests"])
        result["mode"] = mode
        result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
        result["errors"] = sum(
            result[k]
            for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        )
        result["cpu_us_per_request"] = {
            name: max(
                0.0,
                after[name].cpu_seconds
                - before[name].cpu_seconds
                - self.idle.get(name, 0.0) * elapsed,
            )
            * 1e6
            / requests
            for name in self.pids
            if name in before and name in after
        }
        result["cpu_cores"] = {
            name: (after[name].cpu_seconds - before[name].cpu_seconds) / elapsed
            for name in self.pids
            if name in before and name in after
        }
        result["rss_mb"] = {name: s.rss_bytes / 2**20 for name, s in after.items()}
        return result


def ms(result: Mapping[str, Any], percentile: str) -> float:
    return float(result["percentiles_us"][percentile]) / 1000


def derived_configs(
    front: Path, noop_ports: list[int], noop_sockets: list[Path], jwks: str, issuer: str
) -> dict[str, Any]:
    """The front Envoy's own configuration, changed only where each baseline differs."""
    document = yaml.safe_load(front.read_text())
    configs: dict[str, Any] = {}

    def manager(doc: dict[str, Any]) -> dict[str, Any]:
        listener = next(x for x in doc["static_resources"]["listeners"] if x["name"] == "front_tls")
        typed: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
        return typed

    def without_ext_authz(doc: dict[str, Any]) -> list[dict[str, Any]]:
        hcm = manager(doc)
        for host in hcm["route_config"]["virtual_hosts"]:
            for route in host["routes"]:
                route.get("typed_per_filter_config", {}).pop("envoy.filters.http.ext_authz", None)
        filters: list[dict[str, Any]] = hcm["http_filters"]
        return filters

    noop = copy.deepcopy(document)
    for cluster in noop["static_resources"]["clusters"]:
        if cluster["name"] == "keymint_grpc":
            cluster.pop("health_checks", None)  # a do-nothing server serves no Health
            cluster["load_assignment"]["endpoints"] = [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": p}
                                }
                            }
                        }
                        for p in noop_ports
                    ]
                }
            ]
    configs["noop"] = noop

    # The same do-nothing server over Unix sockets, plaintext: what the transport costs (the
    # sidecar layout of envoy/README.md, "The Check port").
    uds = copy.deepcopy(noop)
    for cluster in uds["static_resources"]["clusters"]:
        if cluster["name"] == "keymint_grpc":
            cluster["type"] = "STATIC"
            cluster.pop("dns_lookup_family", None)
            cluster.pop("transport_socket", None)
            cluster["load_assignment"]["endpoints"] = [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"pipe": {"path": str(path)}}}}
                        for path in noop_sockets
                    ]
                }
            ]
    configs["noop_uds"] = uds

    plain = copy.deepcopy(document)
    filters = without_ext_authz(plain)
    filters[:] = [f for f in filters if f["name"] != "envoy.filters.http.ext_authz"]
    configs["plain"] = plain

    jwt = copy.deepcopy(document)
    filters = without_ext_authz(jwt)
    index = next(i for i, f in enumerate(filters) if f["name"] == "envoy.filters.http.ext_authz")
    filters[index] = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3."
            "JwtAuthentication",
            "providers": {
                "keymint_deploy": {
                    "issuer": issuer,
                    "audiences": [DEPLOY],
                    "require_expiration": True,
                    "forward": True,
                    "local_jwks": {"inline_string": jwks},
                }
            },
            "rules": [
                {"match": {"prefix": "/deploy/"}, "requires": {"provider_name": "keymint_deploy"}}
            ],
        },
    }
    configs["jwt"] = jwt
    return configs


def fetch(url: str, context: ssl.SSLContext, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def measure(stack: ReplicasStack, directory: Path, sizes: Sizes) -> dict[str, Any]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # loopback; the edge CA is the stack's own
    front = stack.front_url
    issuer = stack.issuer

    # Credentials: the seen ones exchanged at warm-up, the fresh ones never presented before.
    seen = [issuer.mint({"jti": f"bench-seen-{i}"}) for i in range(SEEN_CREDENTIALS)]
    (directory / "seen.txt").write_text("\n".join(seen) + "\n")
    paced = int(sizes.paced_rate * sizes.paced_seconds * 1.5) + 20
    mix = int(sizes.seconds * 2000 * 0.02 * sizes.rounds) + 50
    for mode, count in (("new", paced), ("token", paced), ("mix", mix)):
        tokens = [issuer.mint({"jti": f"bench-{mode}-{i}"}) for i in range(count)]
        (directory / f"{mode}-fresh.txt").write_text("\n".join(tokens) + "\n")

    status, body = fetch(
        f"{front}/token", context, urllib.parse.urlencode(exchange_form(seen[0])).encode()
    )
    assert status == 200, body
    keymint_token = json.loads(body)["access_token"]
    (directory / "keymint.txt").write_text(keymint_token + "\n")
    claims = json.loads(_b64(keymint_token.split(".")[1]))
    status, jwks = fetch(f"{front}/.well-known/jwks.json", context)
    assert status == 200, jwks

    noop_servers = []
    for _ in range(2):
        process, port = start_server(NOOP_SERVER, {**stack.env, "NOOP_MODE": "mtls"})
        noop_servers.append((process, port))
    sockets = [directory / f"noop-{i}.sock" for i in (1, 2)]
    for path in sockets:
        code = NOOP_SERVER.replace('"127.0.0.1:0"', f'"unix:{path}"')
        noop_servers.append(start_server(code, {**stack.env, "NOOP_MODE": "plaintext"}))
    envoys: dict[str, EnvoyProcess] = {}
    try:
        configs = derived_configs(
            stack.front.config,
            [p for _, p in noop_servers[:2]],
            sockets,
            jwks.decode(),
            claims["iss"],
        )
        for name, document in configs.items():
            path = directory / f"{name}-envoy.yaml"
            path.write_text(yaml.safe_dump(document, sort_keys=False))
            envoys[name] = EnvoyProcess(path, directory, f"{name}-envoy").start()
        urls = {"keymint": front}
        urls.update({n: f"https://127.0.0.1:{e.port('front_tls')}" for n, e in envoys.items()})
        for name, url in urls.items():  # each path answers 200 before anything is measured
            token = keymint_token if name == "jwt" else seen[0]
            request = urllib.request.Request(
                url + PATH, headers={"authorization": f"Bearer {token}"}
            )
            with urllib.request.urlopen(request, context=context, timeout=10) as reply:
                assert reply.status == 200, (name, reply.status)
        if True:  # jwt_authn refuses what it should (else the baseline measures nothing)
            status, _ = fetch(urls["jwt"] + PATH, context)
            assert status == 401, status

        pids = dict(stack.pids())
        for i, (process, _) in enumerate(noop_servers, start=1):
            pids[f"noop-{i}"] = process.pid
        for name, envoy in envoys.items():
            assert envoy.process is not None
            pids[f"envoy-{name}"] = envoy.process.pid
        runner = Runner(directory, pids)

        # Warm-up: every seen credential exchanged on every replica, connections and pools open.
        for name, url in urls.items():
            runner.run(url, "jwt" if name == "jwt" else "seen", seconds=1, connections=4)
        runner.run(front, "newpath", seconds=1, connections=4)
        runner.measure_idle(3.0 if sizes is not QUICK else 1.0)

        throughput: dict[str, list[dict[str, Any]]] = {}
        plan = [
            ("noop", urls["noop"], "seen"),
            ("noop_uds", urls["noop_uds"], "seen"),
            ("seen", front, "seen"),
            ("plain", urls["plain"], "seen"),
            ("jwt", urls["jwt"], "jwt"),
            ("newpath", front, "newpath"),
        ]
        for _ in range(sizes.rounds):
            for name, url, mode in plan:
                result = runner.run(url, mode, seconds=sizes.seconds, connections=sizes.connections)
                throughput.setdefault(name, []).append(result)
        best = {name: max(runs, key=lambda r: r["rps"]) for name, runs in throughput.items()}
        best["mix"] = runner.run(front, "mix", seconds=sizes.seconds, connections=sizes.connections)

        latency: dict[str, dict[str, Any]] = {}
        for name, url, mode in plan:
            latency[name] = runner.run(url, mode, seconds=sizes.latency_seconds, connections=1)
        pause = 1000 / sizes.paced_rate
        for mode in ("new", "token"):
            latency[mode] = runner.run(
                front, mode, seconds=sizes.paced_seconds, connections=1, delay_ms=pause
            )
    finally:
        for envoy in envoys.values():
            envoy.stop()
        for process, _ in noop_servers:
            process.terminate()
            process.wait()
    return {
        "throughput": best,
        "latency": latency,
        "sizes": sizes.__dict__,
        "idle_cores": runner.idle,
    }


def _b64(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def headline(results: Mapping[str, Any]) -> dict[str, Any]:
    best, latency = results["throughput"], results["latency"]
    return {
        "cached_vs_noop_rps": round(best["seen"]["rps"] / best["noop"]["rps"], 3),
        "cached_vs_noop_p99": round(ms(best["seen"], "99") / ms(best["noop"], "99"), 3),
        "cached_vs_jwt_authn_rps": round(best["seen"]["rps"] / best["jwt"]["rps"], 3),
        "seen_overhead_p50_ms": round(ms(latency["seen"], "50") - ms(latency["plain"], "50"), 3),
        "noop_overhead_p50_ms": round(ms(latency["noop"], "50") - ms(latency["plain"], "50"), 3),
        "noop_uds_overhead_p50_ms": round(
            ms(latency["noop_uds"], "50") - ms(latency["plain"], "50"), 3
        ),
        "new_p50_ms": round(ms(latency["new"], "50"), 3),
        "new_p99_ms": round(ms(latency["new"], "99"), 3),
        "token_p50_ms": round(ms(latency["token"], "50"), 3),
        "token_p99_ms": round(ms(latency["token"], "99"), 3),
        "new_path_vs_seen_p50": round(ms(latency["newpath"], "50") / ms(latency["seen"], "50"), 3),
        "seen_rps": round(best["seen"]["rps"], 1),
        "noop_rps": round(best["noop"]["rps"], 1),
        "noop_uds_rps": round(best["noop_uds"]["rps"], 1),
        "plain_rps": round(best["plain"]["rps"], 1),
        "jwt_authn_rps": round(best["jwt"]["rps"], 1),
        "newpath_rps": round(best["newpath"]["rps"], 1),
        "mix_rps": round(best["mix"]["rps"], 1),
        "errors": sum(
            r["errors"] for r in [*best.values(), *latency.values()] if r["mode"] != "mix"
        )
        + best["mix"]["errors"],
        "fresh_exhausted": sum(r["fresh_exhausted"] for r in [*best.values(), *latency.values()]),
    }


def report(results: Mapping[str, Any]) -> None:
    for kind in ("throughput", "latency"):
        for name, r in results[kind].items():
            cpu = r["cpu_us_per_request"]
            gateways = sum(v for k, v in cpu.items() if k.startswith("gateway"))
            signers = sum(v for k, v in cpu.items() if k.startswith("signer"))
            print(
                f"{kind:10s} {name:8s} {r['rps']:8.0f} req/s  p50 {ms(r, '50'):7.2f}  "
                f"p99 {ms(r, '99'):7.2f}  p99.9 {ms(r, '99.9'):7.2f} ms  errors {r['errors']}  "
                f"CPU/request: gateways {gateways:6.0f} us, signers {signers:6.0f} us"
            )


def plot(results: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, kind, title in (
        (axes[0], "throughput", f"{results['sizes']['connections']} requests in flight"),
        (axes[1], "latency", "one request at a time (new, token: paced)"),
    ):
        for name, r in results[kind].items():
            points = sorted((float(p), v / 1000) for p, v in r["percentiles_us"].items())
            axis.plot([p for p, _ in points], [v for _, v in points], marker=".", label=name)
        axis.set_xscale("function", functions=(_nines, _unnines))
        axis.set_xticks([10, 50, 90, 99, 99.9, 99.99])
        axis.set_xticklabels(["p10", "p50", "p90", "p99", "p99.9", "p99.99"])
        axis.set_yscale("log")
        axis.set_ylabel("latency through Envoy (ms)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("make bench-e2e: latency distribution by scenario")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _nines(p: Any) -> Any:
    import numpy as np

    return -np.log10(np.clip(100 - np.asarray(p, dtype=float), 1e-3, None) / 100)


def _unnines(x: Any) -> Any:
    import numpy as np

    return 100 - 100 * np.power(10, -np.asarray(x, dtype=float))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: the harness runs")
    parser.add_argument("--out", type=Path, default=OUT, help="where results and plots go")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    with (
        tempfile.TemporaryDirectory(prefix="keymint-bench-e2e-") as directory,
        replicas_stack(Path(directory), settings=STACK) as stack,
    ):
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        results = measure(stack, Path(directory), sizes)
    results["started_utc"] = started
    results["cpu_count"] = os.cpu_count()
    summary = headline(results)
    results["summary"] = summary
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-e2e.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "bench-e2e-latency.png")
    report(results)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
