"""A minted token is never released without its audit record.

The record of a fresh mint is made durable before anyone sees the token: not the caller, not the
callers waiting on the same mint, not the token cache (which other replicas read). When it cannot
be written (disk full, read-only), the Check is a 503 `audit_unavailable` and the token goes
nowhere; once the log can be written again, minting resumes. The pipeline, minter and identity
layer are the real ones (tests/extauthz/server/test_pipeline.py's), with one Ed25519 key for the
quorum.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

from signer.audit import AuditError, token_ref
from signer.coordinator import QuorumUnavailable
from tests.extauthz.server.test_pipeline import (
    Signed,
    Signer,
    check_request,
    engine,
    minted,
    pipeline,
)
from tests.helpers.certs import CertificateAuthority

CALLER = "spiffe://prod.test/ns/web/sa/search"


@dataclass
class Disk:
    """The audit log as the pipeline sees it: records, or AuditError while `full`; `gate`, when
    set, holds every append until it opens."""

    full: bool = False
    gate: asyncio.Event | None = None
    seconds: float = 0.0  # how long a write takes
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)

    async def append(self, event: str, data: Mapping[str, object] | None = None) -> object:
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.seconds)
        if self.full:
            raise AuditError("/var/log/keymint/audit.jsonl: write failed: No space left on device")
        self.events.append((event, dict(data or {})))
        return None

    def mints(self) -> list[dict[str, object]]:
        return [data for event, data in self.events if event == "mint"]


def status_and_reason(response: CheckResponse) -> tuple[int, str]:
    if response.status.code == 0:
        return 200, "ok"
    body = json.loads(response.denied_response.body)
    return response.denied_response.status.code, str(body["error"])


def test_an_unrecordable_mint_is_a_503_for_everyone_waiting_on_it_and_reaches_no_cache() -> None:
    ca = CertificateAuthority.root("prod.test")
    caller = ca.issue_svid(CALLER)
    disk = Disk(full=True, seconds=0.05)
    signatures: list[None] = []
    signer = Signer(during=lambda: signatures.append(None))
    gateway = pipeline(ca, engine(), signer=signer, audit=disk)  # type: ignore[arg-type]

    async def run() -> None:
        # Five concurrent Checks of one caller share one mint; its record cannot be written.
        answers = await asyncio.gather(
            *(gateway.check(check_request(certificate=caller)) for _ in range(5))
        )
        for answer in answers:
            assert status_and_reason(answer) == (503, "audit_unavailable")
            assert not answer.ok_response.headers  # no authorization header, no token
            retry = {h.header.key: h.header.value for h in answer.denied_response.headers}
            assert retry["retry-after"] == "1"
        assert disk.mints() == []
        assert len(signatures) == 1

        # The disk has room again: the next Check signs afresh (nothing was cached: neither the
        # token cache other replicas read nor the hot cache), and its record exists.
        disk.full = False
        token = minted(await gateway.check(check_request(certificate=caller)))
        assert len(signatures) == 2
        (record,) = disk.mints()
        assert record["token_ref"] == token_ref(token)
        assert record["subject"] == CALLER

    asyncio.run(run())


def test_callers_waiting_on_a_mint_get_the_token_only_after_its_record_is_durable() -> None:
    ca = CertificateAuthority.root("prod.test")
    caller = ca.issue_svid(CALLER)

    async def run() -> None:
        disk = Disk(gate=asyncio.Event())
        gateway = pipeline(ca, engine(), audit=disk)  # type: ignore[arg-type]
        checks = [
            asyncio.ensure_future(gateway.check(check_request(certificate=caller)))
            for _ in range(3)
        ]
        done, _ = await asyncio.wait(checks, timeout=0.3)
        assert not done, "a token left before its record was written"
        disk.gate.set()  # type: ignore[union-attr]
        tokens = {minted(answer) for answer in await asyncio.gather(*checks)}
        (token,) = tokens
        assert [record["token_ref"] for record in disk.mints()] == [token_ref(token)]

    asyncio.run(run())


def test_a_denial_stands_when_its_record_cannot_be_written() -> None:
    ca = CertificateAuthority.root("prod.test")
    outsider = CertificateAuthority.root("prod.test").issue_svid(CALLER)  # another CA: 401
    disk = Disk(full=True)
    gateway = pipeline(ca, engine(), audit=disk)  # type: ignore[arg-type]
    answer = asyncio.run(gateway.check(check_request(certificate=outsider)))
    status, _ = status_and_reason(answer)
    assert status == 401


def test_a_mint_that_gives_up_after_asking_the_signers_says_so_in_the_audit_log() -> None:
    """The signers' logs hold a sign request for the jti; the gateway's says it gave up on it,
    so reconciliation can tell this signature from one a gateway kept quiet (`mint_abandoned`)."""
    ca = CertificateAuthority.root("prod.test")
    disk = Disk()
    asked: list[str] = []
    signer = Signer(failure=QuorumUnavailable(2, 1, {3: "too slow: missed the deadline"}))
    gateway = pipeline(ca, engine(), signer=signer, audit=disk)  # type: ignore[arg-type]
    original = signer.sign

    async def sign(message: bytes, **kwargs: Any) -> Signed:
        asked.append(str(kwargs["request_id"]))
        return await original(message, **kwargs)

    signer.sign = sign  # type: ignore[method-assign]

    async def run() -> None:
        answer = await gateway.check(check_request(certificate=ca.issue_svid(CALLER)))
        assert status_and_reason(answer) == (503, "no_signing_quorum")
        await asyncio.sleep(0.05)  # the record is written beside the answer

    asyncio.run(run())
    abandoned = [data for event, data in disk.events if event == "mint_abandoned"]
    assert [record["jti"] for record in abandoned] == asked
    assert "missed the deadline" in str(abandoned[0]["why"])
    assert disk.mints() == []


def test_a_mint_cancelled_while_signing_says_so_too() -> None:
    ca = CertificateAuthority.root("prod.test")
    disk = Disk()
    started = asyncio.Event()
    signer = Signer()

    async def sign(message: bytes, **kwargs: Any) -> Signed:
        started.set()
        await asyncio.sleep(60)  # the caller goes away first
        raise AssertionError("not reached")

    signer.sign = sign  # type: ignore[method-assign]
    gateway = pipeline(ca, engine(), signer=signer, audit=disk)  # type: ignore[arg-type]

    async def run() -> None:
        check = asyncio.ensure_future(
            gateway.check(check_request(certificate=ca.issue_svid(CALLER)))
        )
        await started.wait()
        check.cancel()  # Envoy gave up on the Check
        await asyncio.gather(check, return_exceptions=True)
        await asyncio.sleep(0.05)

    asyncio.run(run())
    assert [(event, data["why"]) for event, data in disk.events] == [
        ("mint_abandoned", "cancelled")
    ]
