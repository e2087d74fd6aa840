"""A key rotation on the record: the gateway writes `key_publish` when the signers' endorsement of a
new key is published (POST /admin/keys/publish), so `extauthz audit reconcile` finds the
endorsement the signers signed in the gateway's log, and names it when that record is gone."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp

from extauthz.dev.calls import check_request
from extauthz.dev.inprocess import running_stack
from extauthz.server.http_edge import start_http
from extauthz.tools.audit_reconcile import read_source, reconcile
from signer.audit import AuditLog, parse_record
from signer.ceremony.driver import connect
from signer.token import kid_for

ADMIN_TOKEN = "reconcile-admin-token"


def test_an_endorsement_is_reconciled_and_named_when_its_record_is_erased(tmp_path: Path) -> None:
    async def run() -> None:
        admin = {"KEYMINT_ADMIN_TOKEN_SHA256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()}
        (tmp_path / "stack").mkdir()
        async with running_stack(tmp_path / "stack", **admin) as stack:
            runner, port = await start_http(stack.gateway, "127.0.0.1:0")
            try:
                response = await stack.check(
                    check_request(bearer=stack.issuer.mint(), route_key="deploy")
                )
                assert response.status.code == 0
                async with connect(
                    stack.cluster.addresses([1, 2, 3]), tls_files=stack.cluster.operator_tls
                ) as driver:
                    new_kid = kid_for((await driver.dkg(2)).group_public_key)
                url = f"http://127.0.0.1:{port}/admin/keys/publish"
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(
                        url,
                        json={"kid": new_kid},
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                    ) as reply,
                ):
                    assert reply.status == 200, await reply.text()
            finally:
                await runner.cleanup()
            gateway_log = Path(stack.env["KEYMINT_AUDIT_LOG"])
            signer_logs = {i: stack.cluster.state_dir(i) / "audit.jsonl" for i in (1, 2, 3)}

            records = [parse_record(line) for line in gateway_log.read_bytes().splitlines()]
            (published,) = [r.data for r in records if r.event == "key_publish"]
            assert published["kid"] == new_kid
            assert published["endorsed_by"] == stack.gateway.keyring.active_kid

            signers = {i: read_source(f"signer {i}", p) for i, p in signer_logs.items()}
            result = reconcile([read_source("gateway", gateway_log)], signers)
            assert result.ok, "\n".join(result.lines())
            assert (result.mints, result.signatures) == (1, 2)  # the token and the endorsement

            # The record erased, the chain rewritten: the signers' logs still show the endorsement.
            erased = tmp_path / "erased.jsonl"
            with AuditLog(erased) as log:
                for record in records:
                    if record.event != "key_publish":
                        log.append(record.event, record.data)
            result = reconcile([read_source("gateway", erased)], signers)
            assert [(g.kind.value, g.subject) for g in result.gaps] == [
                ("endorsement_not_recorded", f"endorsement {new_kid}")
            ]

    asyncio.run(run())
