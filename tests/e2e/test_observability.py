"""What operators read of a full run, through the real front Envoy: one trace per mint from Envoy to
each signer, JSON log lines that carry Envoy's request id (the same in the audit record and the
dynamic metadata Envoy logs), and no secret anywhere in the gateway's, the signers' or Envoy's
logs.

The stack runs as production would with tracing and JSON logs on: Envoy with envoy/tracing.yaml
merged in, the gateway and the signers with KEYMINT_TRACING=otlp and KEYMINT_LOG_FORMAT=json, all
exporting to one OTLP collector in this test.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from extauthz.dev.calls import exchange_form
from extauthz.dev.signers import PASSPHRASE
from extauthz.dev.stack import LocalStack, local_stack
from signer import tracing
from tests.e2e.replies import bearer, denial, minted
from tests.envoy.harness import with_tracing
from tests.helpers.otlp_collector import CollectedSpan, OtlpCollector
from tests.helpers.secret_scan import read_logs, scan

CHECK = "envoy.service.auth.v3.Authorization/Check"
SIGN = tracing.SIGN_SPAN
SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    running = OtlpCollector().start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, collector: OtlpCollector
) -> Iterator[LocalStack]:
    observed = {
        "KEYMINT_LOG_FORMAT": "json",
        "KEYMINT_TRACING": "otlp",
        "KEYMINT_TRACING_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # the SDK's batch delay (ms): export promptly
    }

    def traced(rendered: str) -> str:
        return with_tracing(
            rendered, OTEL_COLLECTOR_PORT=collector.port, TRACE_SAMPLING_PERCENT=100
        )

    with local_stack(
        tmp_path_factory.mktemp("observed"), extra_env=observed, front_config=traced
    ) as running:
        yield running


def _trace_of(spans: list[CollectedSpan], trace_id: str) -> list[CollectedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


def test_one_mint_through_envoy_is_one_trace_from_envoy_to_each_signer(
    stack: LocalStack, collector: OtlpCollector
) -> None:
    subject = f"/ns/shop/sa/traced-{uuid.uuid4().hex[:8]}"
    minted(stack.front_call("GET", "/orders/v1/orders", certificate=stack.svid(subject)))

    def gateway_check(spans: list[CollectedSpan]) -> CollectedSpan | None:
        return next(
            (
                s
                for s in spans
                if s.name == CHECK
                and str(s.attributes.get("keymint.subject", "")).endswith(subject)
            ),
            None,
        )

    def complete(spans: list[CollectedSpan]) -> bool:
        check = gateway_check(spans)
        if check is None:
            return False
        trace = _trace_of(spans, check.trace_id)
        services = {s.service for s in trace}
        signed = [s for s in trace if s.name == SIGN and s.kind == SERVER]
        return "keymint-front-envoy" in services and len(signed) >= 2

    spans = collector.wait_for(complete, timeout=30)  # Envoy exports its spans in batches
    check = gateway_check(spans)
    assert check is not None
    trace = _trace_of(spans, check.trace_id)
    by_id = {s.span_id: s for s in trace}

    # Envoy: the request's span, and its ext_authz call's span, which is the Check's parent.
    envoy = [s for s in trace if s.service == "keymint-front-envoy"]
    ext_authz = by_id[check.parent_span_id]
    assert ext_authz.service == "keymint-front-envoy"
    assert ext_authz.kind == CLIENT
    assert by_id[ext_authz.parent_span_id] in envoy  # the downstream request's span
    assert check.service == "keymint-gateway"
    assert check.kind == SERVER
    assert check.attributes["keymint.decision"] == "allow"

    # The gateway's phases under its Check span, the Sign calls under the mint.
    phases = {s.name: s for s in trace if s.parent_span_id == check.span_id}
    assert {"extauthz.identify", "extauthz.authorize", "extauthz.mint"} <= set(phases)
    # t = 2 calls; more when a signer missed its attempt deadline (a loaded machine) and the
    # coordinator asked another in its place: each is a call under the same mint.
    clients = [s for s in trace if s.name == SIGN and s.kind == CLIENT]
    assert len(clients) >= 2
    assert {c.parent_span_id for c in clients} == {phases["extauthz.mint"].span_id}

    # Each signer that answered recorded the call on its side, under the gateway's client span.
    servers = [s for s in trace if s.name == SIGN and s.kind == SERVER]
    assert {s.parent_span_id for s in servers} <= {c.span_id for c in clients}
    for server in servers:
        assert server.service == f"keymint-signer-{server.attributes['keymint.signer']}"
    assert len({s.service for s in servers}) >= 2


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def _access_entry(stack: LocalStack, jti: str, timeout: float = 10.0) -> dict[str, Any]:
    """Envoy's access log line for the request whose token has `jti` (Envoy flushes it)."""
    path = stack.directory / "front-envoy.access.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in _json_lines(path) if path.exists() else []:
            keymint = entry.get("keymint")
            if isinstance(keymint, dict) and keymint.get("jti") == jti:
                return entry
        time.sleep(0.1)
    raise AssertionError(f"no access log line for jti {jti}")


def test_a_decision_line_carries_envoys_request_id_as_the_audit_record_and_metadata_do(
    stack: LocalStack,
) -> None:
    token = minted(
        stack.front_call("GET", "/orders/v1/orders", certificate=stack.svid("/ns/shop/sa/logged"))
    )
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    entry = _access_entry(stack, jti)
    request_id = entry["request_id"]
    assert request_id
    assert request_id != "-"
    # The dynamic metadata Envoy logged names the same request.
    assert entry["keymint"]["request_id"] == request_id

    # The gateway's JSON line for the decision: the fields, and no token.
    lines = _json_lines(stack.gateway.log)
    (decision,) = [line for line in lines if line.get("jti") == jti]
    assert decision["logger"] == "extauthz.decision"
    assert decision["request_id"] == request_id
    assert decision["decision"] == "allow"
    assert decision["reason"] == "minted"
    assert decision["subject"].endswith("/ns/shop/sa/logged")
    assert decision["token"].startswith("sha256:")
    assert len(decision["signers"]) == 2
    assert decision["trace_id"]  # tracing is on: the line names its trace

    # The audit record of the mint: the same request id.
    records = [json.loads(line) for line in (stack.directory / "gateway-audit.jsonl").open()]
    (record,) = [r for r in records if r.get("data", {}).get("jti") == jti]
    assert record["data"]["request_id"] == request_id

    # A denial's line and record carry it too.
    refused = stack.front_call("GET", "/orders/v1/orders", headers=bearer("not-a-token"))
    denial(refused, 401, "malformed_token")
    denied = [line for line in _json_lines(stack.gateway.log) if line.get("decision") == "deny"]
    assert denied
    assert all(line.get("request_id") for line in denied)


def test_no_secret_in_any_log_of_the_run(stack: LocalStack) -> None:
    """After every flow (mTLS and OIDC mints, a cached answer, /token, denials), no token, PEM
    private key, key share or passphrase appears in the gateway's, the signers' or Envoy's logs,
    nor in the gateway's or the signers' audit logs. The scanner's own test (tests/helpers)
    shows it finds each kind when planted."""
    secrets: dict[str, str] = {"vault passphrase": PASSPHRASE}
    svid = stack.svid("/ns/shop/sa/scanned")
    for _ in range(2):  # a mint, then the hot cache
        secrets[f"minted token {_}"] = minted(
            stack.front_call("GET", "/orders/v1/orders", certificate=svid)
        )
    oidc = stack.oidc_token(jti=str(uuid.uuid4()))
    secrets["OIDC token"] = oidc
    secrets["minted for OIDC"] = minted(
        stack.front_call("GET", "/deploy/v1/releases", headers=bearer(oidc))
    )
    subject_token = stack.oidc_token(jti=str(uuid.uuid4()))
    secrets["subject token"] = subject_token
    exchanged = stack.front_call("POST", "/token", data=exchange_form(subject_token))
    assert exchanged.status == 200, exchanged.body
    secrets["exchanged token"] = exchanged.json()["access_token"]
    denial(stack.front_call("GET", "/orders/v1/orders"), 401, "missing_credential")
    time.sleep(1.5)  # Envoy's access log flushes each second

    directory = stack.directory
    logs = read_logs(
        [
            stack.gateway.log,
            *(p.log for p in stack.cluster.signers.values()),
            *directory.glob("*envoy.log"),
            *directory.glob("*envoy.access.log"),
            Path(stack.gateway.env["KEYMINT_AUDIT_LOG"]),
            *(stack.cluster.state_dir(i) / "audit.jsonl" for i in stack.cluster.signers),
        ]
    )
    # The gateway, three signers, two Envoys' logs and access logs, and four audit logs.
    assert len(logs) >= 11
    assert any('"logger":"extauthz.decision"' in text for text in logs.values())
    findings = scan(logs, secrets=secrets, shares=stack.cluster.shares)
    assert findings == []
