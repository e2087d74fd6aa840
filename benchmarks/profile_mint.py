"""Where a new credential's milliseconds go: bench-check's new-credential load (a fresh GitHub OIDC
token per Check at a steady rate, direct gRPC over mTLS, 2-of-3 signing through 3 signer
processes), with the gateway and the signers timed and sampled while it runs.

    python benchmarks/profile_mint.py [--seconds 10] [--rate 50] [--phases] [--py-spy DIR]

`--phases`: wall-clock timers around each step of the gateway's mint path and of a signer's Sign
handler (benchmarks/phase_timer.py, installed into the processes at start; nothing in the
packages knows of it): p50 and mean per step. `--py-spy DIR`: py-spy samples each process while
the load runs (py-spy from PyPI, the `bench` extra; only samples that hold the GIL, so Python's
own CPU and not its waits), writes each process's collapsed stacks to DIR (input for flamegraph.pl
or speedscope), and prints its CPU per mint by function (self and inclusive). Timers and sampling
both add cost: compare figures from the same mode, and take latencies without them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_check
from bench_check import GATEWAY_SERVER, channel_for, cpu_seconds, pct, start_server
from envoy.service.auth.v3 import external_auth_pb2_grpc

from extauthz.dev.calls import check_request
from extauthz.dev.certs import pem
from extauthz.dev.github import LocalOidcIssuer
from extauthz.dev.settings import OIDC_AUDIENCE, root_ca, stack_env, write_trust_root
from extauthz.dev.signers import SignerCluster

TIMED_GATEWAY = (
    """
import sys
sys.path.insert(0, "benchmarks")
import phase_timer
phase_timer.install(phase_timer.gateway_targets())
"""
    + GATEWAY_SERVER
)


DENIED: Counter[str] = Counter()


async def new_credentials(port: int, tokens: list[str], directory: Path) -> list[float]:
    """bench_check's steady new-credential load, counting denials instead of stopping at one
    (a loaded machine makes signers miss deadlines)."""
    latencies: list[float] = []
    async with channel_for(port, directory) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)

        async def one(token: str) -> None:
            started = time.perf_counter()
            response = await stub.Check(check_request(bearer=token, route_key="deploy"))
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status.code != 0:
                DENIED[response.denied_response.body] += 1

        tasks = []
        start = time.perf_counter()
        for i, token in enumerate(tokens):
            delay = start + i / bench_check.NEW_RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(token)))
        await asyncio.gather(*tasks)
    return latencies


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    return found


def summarize_stacks(path: Path, rate: int, mints: int, top: int = 14) -> list[str]:
    """Self and inclusive CPU per mint (ms) by function, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        total += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    per_mint = 1000.0 / rate / mints
    lines = [f"  sampled CPU: {total * per_mint:.3f} ms per mint ({total} samples)"]
    lines.append("  self (ms/mint)")
    lines += [f"    {n * per_mint:7.3f}  {frame}" for frame, n in own.most_common(top)]
    lines.append("  inclusive (ms/mint)")
    interesting = [
        (frame, n)
        for frame, n in inclusive.most_common(120)
        if "/asyncio/" not in frame and "<module>" not in frame and "threading.py" not in frame
    ]
    lines += [f"    {n * per_mint:7.3f}  {frame}" for frame, n in interesting[: top * 2]]
    return lines


def _short(frame: str) -> str:
    """`function (path:line)` with the path cut to the package (or the library's file name)."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0]
    for marker in ("/signer/", "/extauthz/", "/benchmarks/", "/tests/"):
        if marker in file:
            file = marker.strip("/") + "/" + file.split(marker, 1)[1]
            break
    else:
        file = file.rsplit("/site-packages/", 1)[-1]
    return f"{name} ({file})"


def phase_table(files: dict[str, Path], since: dict[str, dict[str, int]]) -> list[str]:
    lines = [f"  {'phase':44} {'n':>5} {'p10 ms':>7} {'p50 ms':>7} {'mean ms':>7} {'p99 ms':>7}"]
    for process, path in files.items():
        data: dict[str, list[float]] = json.loads(path.read_text())
        for label, samples in data.items():
            taken = samples[since[process].get(label, 0) :]
            if not taken:
                continue
            lines.append(
                f"  {label[:44]:44} {len(taken):5d} {pct(taken, 0.1):7.3f} "
                f"{statistics.median(taken):7.3f} {statistics.fmean(taken):7.3f} "
                f"{pct(taken, 0.99):7.3f}"
            )
    return lines


def counts(files: dict[str, Path]) -> dict[str, dict[str, int]]:
    time.sleep(0.6)  # one dump interval
    return {
        name: {k: len(v) for k, v in json.loads(path.read_text()).items()}
        for name, path in files.items()
        if path.exists()
    }


async def run(args: argparse.Namespace, directory: Path) -> None:
    issuer = LocalOidcIssuer(clock=time.time, audience=OIDC_AUDIENCE)
    await issuer.start()
    (directory / "trust-bundle.pem").write_bytes(pem(root_ca("prod.test").certificate))
    cluster = SignerCluster(directory, 2, 3)
    env = stack_env(directory, issuer.issuer)
    files: dict[str, Path] = {}
    for identifier, process in cluster.signers.items():
        process.env.update(env)
        if args.phases:
            process.module = "benchmarks.profile_signer"
            files[f"signer-{identifier}"] = directory / f"phases-signer-{identifier}.json"
            process.env["PHASE_TIMER_FILE"] = str(files[f"signer-{identifier}"])
    await asyncio.to_thread(cluster.start)
    assert cluster.package is not None
    gateway_env = {
        **env,
        "KEYMINT_TRUST_ROOT": str(write_trust_root(directory, cluster.package.group_public_key)),
        "KEYMINT_SIGNERS": ",".join(f"{i}={p.address}" for i, p in cluster.signers.items()),
    }
    if args.phases:
        files["gateway"] = directory / "phases-gateway.json"
        gateway_env["PHASE_TIMER_FILE"] = str(files["gateway"])
    code = TIMED_GATEWAY if args.phases else GATEWAY_SERVER
    gateway, port = await asyncio.to_thread(start_server, code, gateway_env)
    processes = {"gateway": gateway.pid} | {
        f"signer-{i}": p.process.pid for i, p in cluster.signers.items() if p.process
    }
    samplers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        mints = args.rate * args.seconds
        # A distinct jti makes each token a credential never seen before.
        tokens = [issuer.mint({"jti": f"profile-{i}"}) for i in range(mints + 40)]
        await new_credentials(port, tokens[:40], directory)  # connections, pools, caches
        DENIED.clear()
        since = counts(files) if args.phases else {}
        cpu_before = {name: _cpu(pid) for name, pid in processes.items()}
        if args.py_spy:
            out = Path(args.py_spy)
            out.mkdir(parents=True, exist_ok=True)
            for name, pid in processes.items():
                samplers[name] = subprocess.Popen(
                    [
                        py_spy(),
                        "record",
                        "--pid",
                        str(pid),
                        "--rate",
                        str(args.spy_rate),
                        "--duration",
                        str(args.seconds + 1),
                        "--nonblocking",
                        "--format",
                        "raw",
                        "--gil",  # only samples holding the GIL: Python's own CPU, not waits
                        *(["--native"] if args.native else []),
                        "-o",
                        str(out / f"{name}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            await asyncio.sleep(1.0)  # py-spy attaches
        started = time.perf_counter()
        latencies = await new_credentials(port, tokens[40:], directory)
        elapsed = time.perf_counter() - started
        cpu_after = {name: _cpu(pid) for name, pid in processes.items()}
        for sampler in samplers.values():
            sampler.wait(timeout=60)
    finally:
        gateway.terminate()
        gateway.wait()
        await asyncio.to_thread(cluster.stop)
        await issuer.stop()
    mints = len(latencies)
    print(
        f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, {os.cpu_count()} cores, "
        f"{mints} new credentials at {args.rate}/s over {elapsed:.1f} s"
    )
    if DENIED:
        print(f"  DENIED (a loaded machine?): {dict(DENIED)}")
    print(
        f"  Check latency: p50 {statistics.median(latencies):.2f} ms, "
        f"p99 {pct(latencies, 0.99):.2f} ms"
    )
    for name in processes:
        used = (cpu_after[name] - cpu_before[name]) * 1000 / mints
        print(f"  {name} CPU (from /proc): {used:.2f} ms per mint")
    if args.phases:
        print("wall-clock phases (timers inside the processes):")
        print("\n".join(phase_table(files, since)))
    if args.py_spy:
        for name in processes:
            raw = Path(args.py_spy) / f"{name}.txt"
            if raw.exists():
                print(f"py-spy, {name}:")
                print("\n".join(summarize_stacks(raw, args.spy_rate, mints)))


def _cpu(pid: int) -> float:
    class _P:
        def __init__(self, pid: int) -> None:
            self.pid = pid

    return cpu_seconds(_P(pid))  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--phases", action="store_true")
    parser.add_argument("--py-spy", metavar="DIR")
    parser.add_argument("--spy-rate", type=int, default=250)
    parser.add_argument("--native", action="store_true", help="py-spy --native: C frames too")
    args = parser.parse_args()
    bench_check.NEW_RATE = args.rate
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run(args, Path(directory)))


if __name__ == "__main__":
    main()
