"""Paired comparison of the new-credential path of two source trees, in one run, on one machine.

    python benchmarks/compare_mint.py --baseline DIR [--seconds 20] [--rate 50] [--rounds 3]

DIR is another checkout of keymint (for example `git archive main | tar -x -C DIR`). Each tree
gets its own stack, as bench-check's new-credential load builds it: a gateway process and three
signer processes (2-of-3), all running that tree's code. One client process sends a fresh GitHub
OIDC token per Check at `--rate` in all, alternating between the two gateways request by request,
so both stacks see the same machine at the same moments: on a shared 2-core machine the absolute
figures move with everything else running, while their ratio is what the change did. Prints, per
round and overall, p50/p99 of each tree and the ratio this tree / baseline, and CPU per mint of
each tree's processes (from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envoy.service.auth.v3 import external_auth_pb2_grpc

from extauthz.dev.calls import check_request, envoy_channel
from extauthz.dev.certs import pem
from extauthz.dev.github import LocalOidcIssuer
from extauthz.dev.settings import OIDC_AUDIENCE, root_ca, stack_env, write_trust_root
from extauthz.dev.signers import SignerCluster

HERE = Path(__file__).resolve().parent.parent
GATEWAY = """
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


@dataclass
class Stack:
    name: str
    tree: Path
    directory: Path  # its signers' state, its policy and its Check port's PKI
    cluster: SignerCluster
    gateway: subprocess.Popen[bytes] | None = None
    port: int = 0
    latencies: list[float] = field(default_factory=list)
    denied: Counter[str] = field(default_factory=Counter)

    def pids(self) -> list[int]:
        signers = [p.process.pid for p in self.cluster.signers.values() if p.process]
        return [*([self.gateway.pid] if self.gateway else []), *signers]


def start(stack: Stack, issuer: str) -> None:
    directory = stack.directory
    env = stack_env(directory, issuer)
    for process in stack.cluster.signers.values():
        process.env.update(env)
        process.env["PYTHONPATH"] = str(stack.tree)
        process.cwd = stack.tree  # its tree's packages first on the path
    stack.cluster.start()
    package = stack.cluster.package
    assert package is not None
    gateway_env = {
        **os.environ,
        **env,
        "PYTHONPATH": str(stack.tree),
        "KEYMINT_TRUST_ROOT": str(write_trust_root(directory, package.group_public_key)),
        "KEYMINT_SIGNERS": ",".join(f"{i}={p.address}" for i, p in stack.cluster.signers.items()),
    }
    stack.gateway = subprocess.Popen(
        [sys.executable, "-c", GATEWAY],
        env=gateway_env,
        stdout=subprocess.PIPE,
        stderr=(directory / "gateway.log").open("ab"),
        cwd=stack.tree,
    )
    assert stack.gateway.stdout is not None
    line = stack.gateway.stdout.readline().decode()
    if not line.startswith("ready"):
        log = (directory / "gateway.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the {stack.name} gateway did not start:\n{log}")
    stack.port = int(line.split()[1])


def stop(stack: Stack) -> None:
    if stack.gateway is not None:
        stack.gateway.terminate()
        stack.gateway.wait()
    stack.cluster.stop()


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(stacks: list[Stack], tokens: list[str], rate: int) -> None:
    """One fresh token per Check at `rate` in all, alternating between the stacks."""
    channels = [envoy_channel(s.directory, f"127.0.0.1:{s.port}") for s in stacks]
    try:
        stubs = [external_auth_pb2_grpc.AuthorizationStub(c) for c in channels]

        async def one(index: int, token: str) -> None:
            stack, stub = stacks[index % len(stacks)], stubs[index % len(stacks)]
            started = time.perf_counter()
            response = await stub.Check(check_request(bearer=token, route_key="deploy"))
            stack.latencies.append((time.perf_counter() - started) * 1000)
            if response.status.code != 0:
                stack.denied[response.denied_response.body] += 1

        tasks = []
        begin = time.perf_counter()
        for i, token in enumerate(tokens):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, token)))
        await asyncio.gather(*tasks)
    finally:
        for channel in channels:
            await channel.close()


def summary(stack: Stack) -> str:
    samples = stack.latencies
    denied = f", {sum(stack.denied.values())} denied" if stack.denied else ""
    return (
        f"{stack.name}: p50 {statistics.median(samples):.2f} ms, p99 {pct(samples, 0.99):.2f} ms, "
        f"mean {statistics.fmean(samples):.2f} ms ({len(samples)} checks{denied})"
    )


async def main_async(args: argparse.Namespace, directory: Path) -> None:
    issuer = LocalOidcIssuer(clock=time.time, audience=OIDC_AUDIENCE)
    await issuer.start()
    stacks = []
    for name, tree in (("baseline", Path(args.baseline).resolve()), ("this tree", HERE)):
        where = directory / name.replace(" ", "-")
        where.mkdir()
        (where / "trust-bundle.pem").write_bytes(pem(root_ca("prod.test").certificate))
        stacks.append(Stack(name, tree, where, SignerCluster(where, 2, 3)))
    try:
        for stack in stacks:
            await asyncio.to_thread(start, stack, issuer.issuer)
        count = args.rate * args.seconds
        tokens = iter(issuer.mint({"jti": f"compare-{i}"}) for i in range(10**9))
        await load(stacks, [next(tokens) for _ in range(40)], args.rate)  # warm-up
        overall: dict[str, list[float]] = {s.name: [] for s in stacks}
        cpu: dict[str, float] = {s.name: 0.0 for s in stacks}
        for round_number in range(1, args.rounds + 1):
            if round_number % 2 == 0:
                stacks.reverse()  # each tree goes first in every other round
            for stack in stacks:
                stack.latencies, stack.denied = [], Counter()
            before = {s.name: cpu_seconds(s.pids()) for s in stacks}
            await load(stacks, [next(tokens) for _ in range(count)], args.rate)
            for stack in stacks:
                cpu[stack.name] += cpu_seconds(stack.pids()) - before[stack.name]
                overall[stack.name].extend(stack.latencies)
            base, this = sorted(stacks, key=lambda s: s.name != "baseline")
            print(
                f"{time.strftime('%H:%M:%S', time.gmtime())} UTC round {round_number}: "
                f"{summary(base)}; {summary(this)}; this/baseline p50 "
                f"{statistics.median(this.latencies) / statistics.median(base.latencies):.2f}, "
                f"p99 {pct(this.latencies, 0.99) / pct(base.latencies, 0.99):.2f}",
                flush=True,
            )
    finally:
        for stack in stacks:
            await asyncio.to_thread(stop, stack)
        await issuer.stop()
    base_all, this_all = overall["baseline"], overall["this tree"]
    print(
        f"overall, {len(base_all)} + {len(this_all)} checks: baseline p50 "
        f"{statistics.median(base_all):.2f} / p99 {pct(base_all, 0.99):.2f} ms; this tree p50 "
        f"{statistics.median(this_all):.2f} / p99 {pct(this_all, 0.99):.2f} ms; ratio p50 "
        f"{statistics.median(this_all) / statistics.median(base_all):.2f}, p99 "
        f"{pct(this_all, 0.99) / pct(base_all, 0.99):.2f}"
    )
    for name, seconds in cpu.items():
        per_mint = seconds * 1000 / len(overall[name])
        print(f"CPU of {name}'s gateway and signers: {per_mint:.2f} ms per mint")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="another keymint checkout")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rate", type=int, default=50, help="Checks per second, both stacks")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(main_async(args, Path(directory)))


if __name__ == "__main__":
    main()
