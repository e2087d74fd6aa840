"""make bench-check: Envoy's Check against the gateway's gRPC server, from a client process.

In one run, with every server in its own process, and every client presenting Envoy's client
certificate over mTLS as the shipped Envoy config does:
- a do-nothing grpc.aio Authorization server answering a fixed OK over mTLS: the baseline; the
  same server over plaintext (what mTLS costs) and over mTLS with the gateway's allow-list of
  Envoy identities around its handler (what the per-call identity check costs);
- the gateway with (a) a credential it has seen before (the hot path): throughput, p50, p99;
- the gateway with (b) a new GitHub OIDC credential each time at a steady 50 per second: full
  verification, policy and a 2-of-3 threshold mint through 3 signer processes: p50 and p99.
For each throughput series, the server process's CPU time per Check (user + system, from
/proc) is reported too: the client, not the server, is often what limits checks/s here.
The gateway's per-identity rate limit is lifted for (a), which sends one identity's requests as
fast as the client can.

`workers_2_vs_1`: (a) against `extauthz serve --workers 2` over `--workers 1`, in the same run,
from this one client process over several connections (SO_REUSEPORT hands each connection to one
worker, so one connection would reach one worker). The machine has 2 cores and the client needs
one of them: the client's own CPU use is printed beside the figure (in cores; in the JSON line,
`workers_2_client_cores` for the `--workers 2` series); a client near 1.0 core leaves the two
workers about one core between them, which caps the ratio whatever the workers could do.
Without Redis, one worker keeps the per-identity rate-limit buckets in memory, two share them in
SQLite in the state directory (leased up to 64 tokens at a time; extauthz.server.app,
`build_rate_limiter`), so the two series do not run quite the same code per Check.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from extauthz.dev.calls import check_request, envoy_channel
from extauthz.dev.certs import pem
from extauthz.dev.github import LocalOidcIssuer
from extauthz.dev.settings import (
    OIDC_AUDIENCE,
    check_port_pki,
    root_ca,
    stack_env,
    write_trust_root,
)
from extauthz.dev.signers import SignerCluster
from extauthz.server.check_port import AllowedClients
from signer.devca import envoy_name, gateway_name, spiffe_id
from signer.tls import server_credentials

REPO = Path(__file__).resolve().parent.parent

NOOP_MODES = ("plaintext", "mtls", "mtls+allowlist")
THROUGHPUT_SECONDS = 3.0
ROUNDS = 3
CONCURRENCY = 16
NEW_RATE = 50
NEW_SECONDS = 10

# NOOP_MODE: "plaintext", "mtls" (the gateway's server credentials) or "mtls+allowlist" (and the
# gateway's check that admits only Envoy's SPIFFE ID, wrapped around the handler as in the gateway).
NOOP_SERVER = """
import asyncio, os, grpc
from pathlib import Path
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from google.rpc import status_pb2
from extauthz.server.check_port import AllowedClients, GuardedRegistry
from signer.devca import TlsFiles
from signer.tls import server_credentials

OK = CheckResponse(status=status_pb2.Status(code=0))

class Noop(external_auth_pb2_grpc.AuthorizationServicer):
    async def Check(self, request, context):
        return OK

async def main():
    mode = os.environ["NOOP_MODE"]
    allowed = os.environ["KEYMINT_CHECK_ALLOWED_CLIENTS"]
    server = grpc.aio.server()
    services = server
    if mode == "mtls+allowlist":
        services = GuardedRegistry(server, AllowedClients({allowed}).authorize)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Noop(), services)
    if mode == "plaintext":
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        env = os.environ
        files = TlsFiles(
            Path(env["KEYMINT_CHECK_CLIENT_CA"]),
            Path(env["KEYMINT_CHECK_TLS_CERT"]),
            Path(env["KEYMINT_CHECK_TLS_KEY"]),
        )
        port = server.add_secure_port("127.0.0.1:0", server_credentials(files))
    await server.start()
    print(f"ready {port} 0", flush=True)
    await server.wait_for_termination()

from signer.runtime import run  # the runtime keymint's servers run on: like against like
run(main())
"""

GATEWAY_SERVER = """
import asyncio, os
# Run from the tree's root (cwd): ask its files, not an import, which the project's editable
# install would answer from this checkout for a module the tree lacks.
from pathlib import Path
if Path("extauthz/server/app.py").exists():
    from extauthz.server.app import serve
else:  # a baseline from before extauthz/server/
    from extauthz.app import serve
from extauthz.config import GatewaySettings
if Path("signer/runtime.py").exists():  # the event loop `extauthz serve` runs on
    from signer.runtime import run
else:  # a baseline from before signer.runtime
    run = asyncio.run
run(serve(GatewaySettings.from_env(os.environ),
          started=lambda g, h: print(f"ready {g} {h}", flush=True)))
"""


WORKER_CHANNELS = 8  # connections the client opens to the workers' shared port


def start_cli_gateway(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """`extauthz serve` (with KEYMINT_WORKERS in `env`); its Check port, from its ready line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "extauthz.cli", "serve"],
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line.startswith("keymint-gateway ready"):
        process.kill()
        raise RuntimeError(f"gateway did not start: {line!r}")
    fields = dict(part.split("=") for part in line.split()[2:])
    wait_ready(int(fields["http_port"]))  # it listens before it is ready (extauthz.server.startup)
    return process, int(fields["grpc_port"])


def wait_ready(http_port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=2):
                return
        except OSError:  # HTTPError (503) included
            time.sleep(0.05)
    raise RuntimeError(f"the gateway was not ready within {timeout:.0f}s")


def tree_cpu_seconds(process: subprocess.Popen[bytes]) -> float:
    """CPU time of a process and its children (the supervisor and its workers)."""
    pid = process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = cpu_seconds(process)
    for child in children:
        fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def separate_channel(port: int, directory: Path) -> grpc.aio.Channel:
    """Envoy's mTLS channel on a connection of its own (not shared with other channels)."""
    from signer.devca import dns_name

    ca, cert, key = check_port_pki(directory)[envoy_name()].read()
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    options = [
        ("grpc.ssl_target_name_override", dns_name(gateway_name())),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options)


async def spread_throughput(
    port: int, request: CheckRequest, directory: Path, server: subprocess.Popen[bytes]
) -> tuple[float, float, float]:
    """Checks per second over WORKER_CHANNELS connections, server CPU us per Check (all its
    processes) and the client's own CPU use in cores over the run."""
    channels = [separate_channel(port, directory) for _ in range(WORKER_CHANNELS)]
    try:
        stubs = [external_auth_pb2_grpc.AuthorizationStub(c) for c in channels]
        for stub in stubs:
            for _ in range(50):
                await stub.Check(request)
        stop_at = time.perf_counter() + THROUGHPUT_SECONDS

        async def worker(stub: Any) -> int:
            done = 0
            while time.perf_counter() < stop_at:
                response = await stub.Check(request)
                assert response.status.code == 0, response
                done += 1
            return done

        cpu_before, client_before = tree_cpu_seconds(server), time.process_time()
        started = time.perf_counter()
        per_channel = max(1, CONCURRENCY // WORKER_CHANNELS)
        counts = await asyncio.gather(*(worker(s) for s in stubs for _ in range(per_channel)))
        elapsed = time.perf_counter() - started
        cpu = tree_cpu_seconds(server) - cpu_before
        client = (time.process_time() - client_before) / elapsed
    finally:
        for channel in channels:
            await channel.close()
    return sum(counts) / elapsed, cpu * 1e6 / sum(counts), client


def start_server(code: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line.startswith("ready"):
        process.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return process, int(line.split()[1])


def cpu_seconds(process: subprocess.Popen[bytes]) -> float:
    """User + system CPU time of a running process, from /proc/PID/stat."""
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def channel_for(port: int, directory: Path | None) -> grpc.aio.Channel:
    """Envoy's mTLS channel, or plaintext when there is no Check port PKI to use."""
    address = f"127.0.0.1:{port}"
    return envoy_channel(directory, address) if directory else grpc.aio.insecure_channel(address)


async def throughput(
    port: int, request: CheckRequest, directory: Path | None, server: subprocess.Popen[bytes]
) -> tuple[float, list[float], float]:
    """Checks per second, latencies (ms) and the server's CPU microseconds per Check."""
    latencies: list[float] = []
    async with channel_for(port, directory) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        for _ in range(200):
            await stub.Check(request)
        stop_at = time.perf_counter() + THROUGHPUT_SECONDS

        async def worker() -> int:
            done = 0
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                response = await stub.Check(request)
                latencies.append((time.perf_counter() - started) * 1000)
                assert response.status.code == 0, response
                done += 1
            return done

        cpu_before = cpu_seconds(server)
        started = time.perf_counter()
        counts = await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(server) - cpu_before
    return sum(counts) / elapsed, latencies, cpu * 1e6 / sum(counts)


async def new_credentials(port: int, tokens: list[str], directory: Path) -> list[float]:
    latencies: list[float] = []
    async with channel_for(port, directory) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)

        async def one(token: str) -> None:
            started = time.perf_counter()
            response = await stub.Check(check_request(bearer=token, route_key="deploy"))
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status.code == 0, response.denied_response.body

        for token in tokens[:20]:  # warm-up: connections, JWKS caches, commitment pools
            await one(token)
        latencies.clear()
        tasks = []
        start = time.perf_counter()
        for i, token in enumerate(tokens[20:]):
            delay = start + i / NEW_RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(token)))
        await asyncio.gather(*tasks)
    return latencies


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _TimesTheCheck(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """On its one Check, times the gateway's identity check on that very call's context."""

    def __init__(self, authorize: Callable[[grpc.aio.ServicerContext], Awaitable[None]]) -> None:
        self.authorize = authorize
        self.microseconds = 0.0

    async def Check(self, request: CheckRequest, context: grpc.aio.ServicerContext) -> Any:
        calls, best = 20_000, float("inf")
        for _ in range(7):  # the best of 7: noise only ever adds time
            started = time.perf_counter()
            for _ in range(calls):
                await self.authorize(context)
            best = min(best, (time.perf_counter() - started) / calls)
        self.microseconds = best * 1e6
        return CheckResponse()


async def identity_check_cost(directory: Path) -> float:
    """Microseconds the allow-list check takes per call, measured inside a real mTLS call."""
    gateway = check_port_pki(directory)[gateway_name()]
    servicer = _TimesTheCheck(AllowedClients({spiffe_id(envoy_name())}).authorize)
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(gateway))
    await server.start()
    try:
        async with channel_for(port, directory) as channel:
            await external_auth_pb2_grpc.AuthorizationStub(channel).Check(
                CheckRequest(), timeout=60
            )
    finally:
        await server.stop(None)
    return servicer.microseconds


async def main_async(directory: Path) -> dict[str, float]:
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
        for mode in NOOP_MODES:
            servers[mode] = await asyncio.to_thread(
                start_server, NOOP_SERVER, {**env, "NOOP_MODE": mode}
            )
        servers["gateway"] = await asyncio.to_thread(start_server, GATEWAY_SERVER, gateway_env)
        seen = check_request(bearer=issuer.mint(), route_key="deploy")
        # Alternate the servers and keep each one's best round (throughput, CPU per Check): noise
        # on a shared machine only ever makes a round worse.
        rates: dict[str, list[float]] = {name: [] for name in servers}
        cpu: dict[str, list[float]] = {name: [] for name in servers}
        cached_latency: list[float] = []
        for _ in range(ROUNDS):
            for name, (process, port) in servers.items():
                pki = None if name == "plaintext" else directory
                rate, latency, cpu_us = await throughput(port, seen, pki, process)
                rates[name].append(rate)
                cpu[name].append(cpu_us)
                if name == "gateway":
                    cached_latency.extend(latency)
        # A distinct jti makes each token a credential never seen before (same claims otherwise).
        tokens = [issuer.mint({"jti": f"bench-{i}"}) for i in range(NEW_RATE * NEW_SECONDS + 20)]
        fresh = await new_credentials(servers["gateway"][1], tokens, directory)
        # One gateway process and two, started the same way, measured in alternation.
        for process, _ in servers.values():
            process.terminate()
            process.wait()
        servers.clear()
        spread: dict[int, list[tuple[float, float, float]]] = {1: [], 2: []}
        for count in spread:
            state = directory / f"workers-{count}"
            servers[f"workers-{count}"] = await asyncio.to_thread(
                start_cli_gateway,
                {
                    **gateway_env,
                    "KEYMINT_WORKERS": str(count),
                    "KEYMINT_STATE_DIR": str(state),
                    "KEYMINT_AUDIT_LOG": str(state / "audit.jsonl"),
                },
            )
        for _ in range(ROUNDS):
            for count in spread:
                process, port = servers[f"workers-{count}"]
                spread[count].append(await spread_throughput(port, seen, directory, process))
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait()
        await asyncio.to_thread(cluster.stop)
        await issuer.stop()
    figures: dict[str, float] = {
        "identity_check_us": await identity_check_cost(directory),
        "cached_p50_ms": statistics.median(cached_latency),
        "cached_p99_ms": pct(cached_latency, 0.99),
        "new_p50_ms": statistics.median(fresh),
        "new_p99_ms": pct(fresh, 0.99),
        "new_samples": len(fresh),
    }
    for name in rates:
        key = {"gateway": "cached", "mtls": "noop"}.get(name, f"noop_{name.replace('+', '_')}")
        figures[f"{key}_per_s"] = max(rates[name])
        figures[f"{key}_cpu_us"] = min(cpu[name])
    for count, runs in spread.items():
        best = max(runs)  # the round with the most checks/s
        figures[f"workers_{count}_per_s"] = best[0]
        figures[f"workers_{count}_cpu_us"] = best[1]
        figures[f"workers_{count}_client_cores"] = best[2]
    figures["workers_2_vs_1"] = figures["workers_2_per_s"] / figures["workers_1_per_s"]
    return figures


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        figures = asyncio.run(main_async(Path(directory)))
    ratio = figures["cached_per_s"] / figures["noop_per_s"]
    for label, key in (
        ("plaintext", "noop_plaintext"),
        ("mTLS", "noop"),
        ("mTLS + allow-list", "noop_mtls_allowlist"),
    ):
        print(
            f"do-nothing grpc.aio Check server, {label}: {figures[f'{key}_per_s']:.0f} checks/s, "
            f"server CPU {figures[f'{key}_cpu_us']:.0f} us/check (best round)"
        )
    print(
        f"the allow-list check of Envoy's identity, per call: {figures['identity_check_us']:.1f} us"
    )
    print(
        f"(a) seen credential: {figures['cached_per_s']:.0f} checks/s "
        f"({ratio:.2f} of do-nothing over mTLS), server CPU {figures['cached_cpu_us']:.0f} "
        f"us/check, p50 {figures['cached_p50_ms']:.2f} ms, "
        f"p99 {figures['cached_p99_ms']:.2f} ms ({CONCURRENCY} in flight)"
    )
    print(
        f"(b) new credential at {NEW_RATE}/s: p50 {figures['new_p50_ms']:.2f} ms, "
        f"p99 {figures['new_p99_ms']:.2f} ms over {figures['new_samples']} checks"
    )
    for count in (1, 2):
        print(
            f"(a) with --workers {count}, {WORKER_CHANNELS} connections: "
            f"{figures[f'workers_{count}_per_s']:.0f} checks/s, server CPU "
            f"{figures[f'workers_{count}_cpu_us']:.0f} us/check, the client itself using "
            f"{figures[f'workers_{count}_client_cores']:.2f} of the {os.cpu_count()} cores"
        )
    print(
        f"workers_2_vs_1 = {figures['workers_2_vs_1']:.2f}: on {os.cpu_count()} cores, with the "
        f"client using {figures['workers_2_client_cores']:.2f} of them, the two workers share "
        f"about {max(0.0, (os.cpu_count() or 1) - figures['workers_2_client_cores']):.2f}"
    )
    print(
        json.dumps(
            {
                "cached_vs_noop": round(ratio, 3),
                "new_p50_ms": round(figures["new_p50_ms"], 3),
                "new_p99_ms": round(figures["new_p99_ms"], 3),
                "noop_per_s": round(figures["noop_per_s"], 1),
                "noop_plaintext_per_s": round(figures["noop_plaintext_per_s"], 1),
                "noop_mtls_allowlist_per_s": round(figures["noop_mtls_allowlist_per_s"], 1),
                "noop_cpu_us": round(figures["noop_cpu_us"], 1),
                "noop_plaintext_cpu_us": round(figures["noop_plaintext_cpu_us"], 1),
                "noop_mtls_allowlist_cpu_us": round(figures["noop_mtls_allowlist_cpu_us"], 1),
                "cached_cpu_us": round(figures["cached_cpu_us"], 1),
                "identity_check_us": round(figures["identity_check_us"], 2),
                "cached_per_s": round(figures["cached_per_s"], 1),
                "cached_p50_ms": round(figures["cached_p50_ms"], 3),
                "cached_p99_ms": round(figures["cached_p99_ms"], 3),
                "new_rate_per_s": NEW_RATE,
                "workers_1_per_s": round(figures["workers_1_per_s"], 1),
                "workers_2_per_s": round(figures["workers_2_per_s"], 1),
                "workers_2_vs_1": round(figures["workers_2_vs_1"], 3),
                "workers_2_client_cores": round(figures["workers_2_client_cores"], 2),
                "cpu_count": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
