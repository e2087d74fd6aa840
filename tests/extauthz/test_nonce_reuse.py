"""No nonce commitment is ever used twice, shown from the signers' own audit logs.

Rounds of concurrent mints through the gateway (each for a credential never seen, so each is a
real threshold signature) with rolling signer restarts: each round but the first and last runs
with one signer down (killed with SIGKILL, stopped gracefully, or killed while the round is in
flight), so the other two, one of them restarted just before, sign every mint of it. Each
`sign_request` record names the commitment its share used (`commitment_sha256`); `extauthz audit
reconcile` then finds no commitment twice in any signer's log, every mint signed as recorded and
every signature recorded."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from prometheus_client import REGISTRY

from extauthz.dev.calls import check_request
from extauthz.dev.inprocess import Stack, running_stack
from extauthz.tools.audit_reconcile import GapKind, read_source, reconcile

ROUNDS = 6
PER_ROUND = 16
SIGNERS = (1, 2, 3)


async def round_of_mints(stack: Stack, round_number: int, *, kill_midway: int | None = None) -> int:
    """PER_ROUND concurrent Checks, each from a workload seen for the first time; each must be
    allowed. With `kill_midway`, that signer is killed with SIGKILL while they are in flight."""
    requests = [
        check_request(
            certificate=stack.svid(f"/ns/shop/sa/round-{round_number}-{i}"), route_key="orders"
        )
        for i in range(PER_ROUND)
    ]
    calls = [asyncio.ensure_future(stack.check(r)) for r in requests]
    if kill_midway is not None:
        await asyncio.sleep(0.05)
        await asyncio.to_thread(stack.cluster.signers[kill_midway].kill)
    responses = await asyncio.gather(*calls)
    refused = [r.denied_response.body for r in responses if r.status.code != 0]
    assert refused == [], refused  # a quorum held throughout
    return PER_ROUND


async def back_in_use(stack: Stack, signer: int, timeout: float = 60.0) -> int:
    """Steady light traffic (one fresh workload's mint every 0.1 s, each allowed) until the
    gateway's coordinator counts a restarted signer usable again: `keymint_signer_up` 1 and
    commitments from it in its pool. (The coordinator probes a set-aside signer with GetInfo every
    0.2 s, traffic or not; one that answers with a new boot id, a restart, is back in service at
    once and its pool refilled.) How many mints."""
    loop = asyncio.get_running_loop()
    started, mints = loop.time(), 0
    labels = {"signer": str(signer)}
    while not (
        REGISTRY.get_sample_value("keymint_signer_up", labels) == 1
        and (REGISTRY.get_sample_value("keymint_commitment_pool", labels) or 0) > 0
    ):
        assert loop.time() - started < timeout, f"signer {signer} is not back in use"
        mints += 1
        probe = stack.svid(f"/ns/shop/sa/probe-{signer}-{loop.time():.3f}")
        response = await stack.check(check_request(certificate=probe, route_key="orders"))
        assert response.status.code == 0, response.denied_response.body
        await asyncio.sleep(0.1)
    return mints


def shares(stack: Stack, signer: int) -> int:
    """How many sign_request records the signer's log holds now."""
    path = stack.cluster.state_dir(signer) / "audit.jsonl"
    return sum(1 for r in read_source("", path).records if r.event == "sign_request")


def test_concurrent_mints_across_signer_restarts_never_reuse_a_commitment(tmp_path: Path) -> None:
    async def run() -> None:
        # Generous deadlines: this is about nonces, and the machine may be busy.
        async with running_stack(
            tmp_path, KEYMINT_SIGN_TIMEOUT_SECONDS="5", KEYMINT_SIGNER_ATTEMPT_TIMEOUT_SECONDS="2"
        ) as stack:
            signers = stack.cluster.signers
            lives: dict[int, int] = {}  # signer -> its sign records when it last restarted

            async def restart(signer: int) -> int:
                await asyncio.to_thread(signers[signer].start)
                lives[signer] = shares(stack, signer)
                return await back_in_use(stack, signer)

            minted = await round_of_mints(stack, 0)
            # Rolling restarts: each round runs with one signer down, so the other two, one of
            # them restarted just before, must sign every mint of it.
            signers[1].kill()  # a crash: SIGKILL
            minted += await round_of_mints(stack, 1)
            minted += await restart(1)
            signers[2].stop()  # a graceful stop
            minted += await round_of_mints(stack, 2)
            assert shares(stack, 1) > lives[1]  # signer 1 signs in its second life
            minted += await restart(2)
            minted += await round_of_mints(stack, 3, kill_midway=3)  # killed in flight
            assert shares(stack, 2) > lives[2]
            minted += await restart(3)
            signers[1].kill()
            minted += await round_of_mints(stack, 4)
            assert shares(stack, 3) > lives[3]
            minted += await restart(1)
            minted += await round_of_mints(stack, 5)

            gateway = read_source("gateway", stack.env["KEYMINT_AUDIT_LOG"])
            logs = {
                i: read_source(f"signer {i}", stack.cluster.state_dir(i) / "audit.jsonl")
                for i in SIGNERS
            }
            result = reconcile([gateway], logs)

            assert result.mints == minted >= ROUNDS * PER_ROUND
            assert [g for g in result.gaps if g.kind is GapKind.COMMITMENT_REUSED] == []
            assert result.ok, "\n".join(result.lines())
            # The same, read straight from the records: every share named its own commitment.
            for i, source in logs.items():
                records = [r for r in source.records if r.event == "sign_request"]
                used = Counter(str(r.data["commitment_sha256"]) for r in records)
                assert len(used) == len(records), (i, used.most_common(1))
            total = sum(shares(stack, i) for i in SIGNERS)
            assert total >= 2 * minted  # t = 2 shares for each mint, at least

    with asyncio.Runner() as runner:
        runner.run(run())
