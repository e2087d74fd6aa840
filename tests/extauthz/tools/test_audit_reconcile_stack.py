"""`extauthz audit reconcile` on the logs of a real stack (the gateway, three signer processes
composed with the gateway's evidence checker), then on those logs tampered with as a compromised
gateway would: a mint erased from its log (naively, and with the chain rewritten), signatures
obtained with the gateway's keys and code outside its pipeline, and a broken chain."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from extauthz.dev.calls import check_request
from extauthz.dev.inprocess import Stack, running_stack
from extauthz.dev.settings import DEPLOY, ISSUER
from extauthz.model import Route
from extauthz.policy import AuthzRequest, Denial
from extauthz.server.app import build_identifier, build_policy_engine
from extauthz.server.mint import Minter, MintSettings
from signer.audit import AuditLog, parse_record
from signer.coordinator import Coordinator
from tests.conftest import REPO

SIGNERS = (1, 2, 3)


@dataclass
class Minted:
    """A stack that has minted through its pipeline, and a snapshot of its logs since."""

    runner: asyncio.Runner
    stack: Stack
    jtis: list[str]
    snapshot: Path

    def logs(self) -> tuple[Path, dict[int, Path]]:
        return self.snapshot / "gateway.jsonl", {
            i: self.snapshot / f"signer-{i}.jsonl" for i in SIGNERS
        }


def snapshot(stack: Stack, into: Path) -> Path:
    """Copies of every audit log as they are now (each record was fsynced before it counted)."""
    into.mkdir(parents=True, exist_ok=True)
    shutil.copy(stack.env["KEYMINT_AUDIT_LOG"], into / "gateway.jsonl")
    for i in SIGNERS:
        shutil.copy(stack.cluster.state_dir(i) / "audit.jsonl", into / f"signer-{i}.jsonl")
    return into


def reconcile_command(gateway: Path, signers: Mapping[int, Path]) -> tuple[int, dict[str, Any]]:
    """The command as an operator runs it, in its own process; (exit code, its JSON)."""
    argv = [sys.executable, "-m", "extauthz.cli", "audit", "reconcile", "--json"]
    argv += ["--gateway", str(gateway)]
    for i, path in sorted(signers.items()):
        argv += ["--signer", f"{i}={path}"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode in (0, 1), done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, document


def gaps(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(gap["kind"], gap["subject"]) for gap in document["gaps"]]


def rechain(path: Path, keep: Any) -> None:
    """Rewrite a log with only the records `keep(record)` accepts, every hash recomputed: what
    someone who can write the file does to hide a record without breaking the chain."""
    records = [parse_record(line) for line in path.read_bytes().splitlines()]
    path.unlink()
    with AuditLog(path) as log:
        for record in records:
            if keep(record):
                log.append(record.event, record.data)


def mint_jtis(path: Path) -> list[str]:
    records = [parse_record(line) for line in path.read_bytes().splitlines()]
    return [str(r.data["jti"]) for r in records if r.event == "mint"]


@pytest.fixture(scope="module")
def minted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Minted]:
    directory = tmp_path_factory.mktemp("reconcile")
    with asyncio.Runner() as runner:
        context = running_stack(directory)
        stack = runner.run(context.__aenter__())
        try:

            async def traffic() -> None:
                requests = [
                    check_request(
                        certificate=stack.svid(f"/ns/shop/sa/app-{i}"), route_key="orders"
                    )
                    for i in range(4)
                ]
                requests += [
                    check_request(bearer=stack.issuer.mint({"jti": f"ci-{i}"}), route_key="deploy")
                    for i in range(3)
                ]
                requests.append(check_request(route_key="deploy"))  # a denial, no mint
                responses = await asyncio.gather(*(stack.check(r) for r in requests))
                assert [r.status.code for r in responses] == [0] * 7 + [16]
                exchanged = await stack.gateway.pipeline.exchange(
                    stack.issuer.mint({"jti": "ci-exchange"}), DEPLOY, ()
                )
                assert type(exchanged).__name__ == "Allow"

            runner.run(traffic())
            copy = snapshot(stack, directory / "after-traffic")
            jtis = mint_jtis(copy / "gateway.jsonl")
            assert len(jtis) == 8
            yield Minted(runner, stack, jtis, copy)
        finally:
            runner.run(context.__aexit__(None, None, None))


def test_the_logs_of_a_real_stack_reconcile(minted: Minted) -> None:
    code, document = reconcile_command(*minted.logs())

    assert (code, document["reconciled"], document["gaps"]) == (0, True, [])
    assert document["mints"] == 8
    assert document["signatures"] >= 8
    assert all(log["chain_ok"] for log in document["logs"])


def test_a_mint_erased_and_the_chain_rewritten_is_named_by_the_signers_logs(
    minted: Minted, tmp_path: Path
) -> None:
    gateway, signers = minted.logs()
    erased = minted.jtis[2]
    copy = tmp_path / "gateway.jsonl"
    shutil.copy(gateway, copy)
    rechain(copy, lambda r: r.data.get("jti") != erased)

    code, document = reconcile_command(copy, signers)

    assert code == 1
    assert all(log["chain_ok"] for log in document["logs"])  # the rewrite left no trace there
    assert gaps(document) == [("signature_without_mint", erased)]
    (gap,) = document["gaps"]
    assert gap["log"] == "every gateway log"
    assert "no gateway log records it" in gap["detail"]


def test_a_mint_line_deleted_breaks_the_chain_and_is_named_too(
    minted: Minted, tmp_path: Path
) -> None:
    gateway, signers = minted.logs()
    erased = minted.jtis[5]
    copy = tmp_path / "gateway.jsonl"
    copy.write_bytes(
        b"".join(
            line
            for line in gateway.read_bytes().splitlines(keepends=True)
            if erased.encode() not in line
        )
    )

    code, document = reconcile_command(copy, signers)

    assert code == 1
    assert gaps(document) == [("chain_broken", ""), ("signature_without_mint", erased)]
    assert document["gaps"][0]["log"] == f"gateway {copy}"
    assert "seq_mismatch" in document["gaps"][0]["detail"]


def test_a_broken_signer_chain_is_reported_and_its_altered_record_not_believed(
    minted: Minted, tmp_path: Path
) -> None:
    gateway, signers = minted.logs()
    records = [parse_record(line) for line in gateway.read_bytes().splitlines()]
    victim = next(
        str(r.data["jti"]) for r in records if r.event == "mint" and 2 in r.data["signers"]
    )
    altered = dict(signers)
    altered[2] = tmp_path / "signer-2.jsonl"
    lines = signers[2].read_bytes().splitlines(keepends=True)
    hit = next(i for i, line in enumerate(lines) if victim.encode() in line)
    lines[hit] = lines[hit].replace(b'"sign_request"', b'"sign_requesT"')
    altered[2].write_bytes(b"".join(lines))

    code, document = reconcile_command(gateway, altered)

    assert code == 1
    assert ("chain_broken", "") in gaps(document)
    chain = next(g for g in document["gaps"] if g["kind"] == "chain_broken")
    assert chain["log"] == f"signer 2 {altered[2]}"
    assert f"line {hit + 1}" in chain["detail"]
    # Signer 2 signed the victim: with its record not believed, the mint lacks signer 2.
    assert ("mint_not_signed", victim) in gaps(document)
    gap = next(g for g in document["gaps"] if g["kind"] == "mint_not_signed")
    assert gap["log"] == "signer 2"


def test_signatures_got_with_the_gateways_keys_outside_its_pipeline_are_named(
    minted: Minted, tmp_path: Path
) -> None:
    """The attacker holds the gateway's coordinator certificate, settings and code, and a
    caller's credential it saw: it mints with the gateway's own Minter, skipping the audit."""
    stack = minted.stack

    async def mint_outside() -> str:
        settings = stack.gateway.settings
        async with aiohttp.ClientSession() as session:
            identifier = build_identifier(settings, session, time.time)
            engine = build_policy_engine(settings)[0]
            coordinator = Coordinator(
                endpoints=stack.cluster.endpoints(),
                tls=stack.cluster.coordinator_tls,
                threshold=stack.cluster.threshold,
            )
            await coordinator.start()
            try:
                assert identifier.oidc is not None
                identity = await identifier.oidc.verify(stack.issuer.mint({"jti": "stolen"}))
                request = AuthzRequest(
                    identity, Route("api.internal", "/v1/things", "GET", {"route": "deploy"})
                )
                snapshot_ = engine.snapshot()
                grant = engine.evaluate(request, snapshot_)
                assert not isinstance(grant, Denial)
                minter = Minter(
                    settings=MintSettings(issuer=ISSUER),
                    signer=coordinator,
                    group_public_key=lambda: stack.gateway.group_public_key,
                )
                token, cached = await minter.mint(request, grant, snapshot_.digest)
                assert not cached
                return token.jti
            finally:
                await coordinator.close()

    jti = minted.runner.run(mint_outside())
    gateway, signers = (
        snapshot(stack, tmp_path / "after").joinpath("gateway.jsonl"),
        {i: tmp_path / "after" / f"signer-{i}.jsonl" for i in SIGNERS},
    )

    code, document = reconcile_command(gateway, signers)

    assert code == 1
    assert gaps(document) == [("signature_without_mint", jti)]
    assert "for sub 'http://127.0.0.1:" in document["gaps"][0]["detail"]


def test_a_forged_sign_request_pair_with_no_mint_is_a_gap(minted: Minted, tmp_path: Path) -> None:
    """Two signer logs rewritten to hold one more signature (records copied from a real one
    under a new jti): a signature the gateway never recorded, whoever put it there."""
    gateway, signers = minted.logs()
    copies = {}
    source = minted.jtis[1]
    forged = "forged-" + source
    for i, path in signers.items():
        copies[i] = tmp_path / path.name
        records = [parse_record(line) for line in path.read_bytes().splitlines()]
        with AuditLog(copies[i]) as log:
            for record in records:
                log.append(record.event, record.data)
                if record.event == "sign_request" and record.data["request_id"] == source:
                    data = json.loads(json.dumps(record.data))
                    data["request_id"] = forged
                    data["claims"]["jti"] = forged
                    data["commitment_sha256"] = "f" * 64
                    log.append("sign_request", data)

    code, document = reconcile_command(gateway, copies)

    assert code == 1
    assert ("signature_without_mint", forged) in gaps(document)
