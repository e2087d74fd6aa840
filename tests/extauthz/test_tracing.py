"""Tracing one mint: the gateway's spans (OpenTelemetry SDK, in-memory exporter) and each signer's
(real signer processes exporting OTLP to a collector in this test), one tree.

    envoy.service.auth.v3.Authorization/Check   server, the child of the caller's traceparent
      extauthz.identify
      extauthz.authorize
      extauthz.mint
        keymint.signer.v1.Signer/Sign           client, one per signer asked (t of them)
          keymint.signer.v1.Signer/Sign         server, in the signer's process
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from extauthz.dev.calls import check_request
from extauthz.dev.inprocess import running_stack
from signer import tracing
from tests.helpers.otlp_collector import CollectedSpan, OtlpCollector

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
ENVOY_SPAN = "00f067aa0ba902b7"  # as Envoy's ext_authz span would send it
CHECK = "envoy.service.auth.v3.Authorization/Check"
SIGN = tracing.SIGN_SPAN


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.shutdown()


@pytest.fixture
def collector() -> Iterator[OtlpCollector]:
    running = OtlpCollector().start()
    try:
        yield running
    finally:
        running.stop()


def signer_tracing(collector: OtlpCollector) -> dict[str, str]:
    return {
        "KEYMINT_TRACING": "otlp",
        "KEYMINT_TRACING_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # the SDK's batch delay, in ms: export promptly
    }


def hexid(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_of(span: ReadableSpan) -> str:
    return hexid(span.parent.span_id, 16) if span.parent is not None else ""


def test_one_mint_is_one_trace_from_the_callers_context_to_each_signer(
    tmp_path: Path, exported: InMemorySpanExporter, collector: OtlpCollector
) -> None:
    async def mint_once() -> None:
        async with running_stack(tmp_path, **signer_tracing(collector)) as stack:
            request = check_request(certificate=stack.svid("/ns/shop/sa/web"), route_key="orders")
            traceparent = f"00-{TRACE_ID}-{ENVOY_SPAN}-01"
            response = await stack.stub.Check(
                request, metadata=(("traceparent", traceparent),), timeout=10
            )
            assert response.HasField("ok_response")

    asyncio.run(mint_once())

    spans = exported.get_finished_spans()
    assert {hexid(s.context.trace_id, 32) for s in spans} == {TRACE_ID}
    (check,) = by_name(spans, CHECK)
    assert check.kind is SpanKind.SERVER
    assert parent_of(check) == ENVOY_SPAN
    assert check.attributes is not None
    assert check.attributes["keymint.decision"] == "allow"
    check_id = hexid(check.context.span_id, 16)
    for phase in ("extauthz.identify", "extauthz.authorize", "extauthz.mint"):
        (span,) = by_name(spans, phase)
        assert parent_of(span) == check_id, phase
    (mint,) = by_name(spans, "extauthz.mint")
    clients = by_name(spans, SIGN)
    assert len(clients) == 2  # t = 2: the signers asked
    assert {parent_of(c) for c in clients} == {hexid(mint.context.span_id, 16)}
    assert all(c.kind is SpanKind.CLIENT for c in clients)
    asked = {c.attributes["keymint.signer"]: hexid(c.context.span_id, 16) for c in clients}  # type: ignore[index]
    assert len(asked) == 2

    # Each signer recorded its side of the call, as the child of the gateway's client span.
    def signed(collected: list[CollectedSpan]) -> list[CollectedSpan]:
        return [s for s in collected if s.name == SIGN and s.trace_id == TRACE_ID]

    servers = signed(collector.wait_for(lambda collected: len(signed(collected)) >= 2))
    assert len(servers) == 2
    assert {s.trace_id for s in servers} == {TRACE_ID}
    assert {s.kind for s in servers} == {2}  # SPAN_KIND_SERVER
    for server in servers:
        signer = server.attributes["keymint.signer"]
        assert server.service == f"keymint-signer-{signer}"
        assert server.parent_span_id == asked[signer]


def test_a_cached_answer_is_a_check_span_with_no_mint(
    tmp_path: Path, exported: InMemorySpanExporter
) -> None:
    async def twice() -> None:
        async with running_stack(tmp_path) as stack:
            request = check_request(certificate=stack.svid("/ns/shop/sa/web"), route_key="orders")
            await stack.check(request)
            exported.clear()
            await stack.check(request)  # the hot cache

    asyncio.run(twice())
    (check,) = exported.get_finished_spans()
    assert check.name == CHECK
    assert check.parent is None  # no context sent: a trace of its own
    assert check.attributes is not None
    assert check.attributes["keymint.cache"] == "hit"


def test_off_means_no_span_and_no_opentelemetry_call() -> None:
    """With tracing off, `span` is one shared no-op and no context is read or sent."""
    assert not tracing.enabled()
    first, second = tracing.span("a"), tracing.span("b", server=True)
    assert first is second
    assert isinstance(first, contextlib.nullcontext)
    assert tracing.outgoing_metadata() == ()
    assert tracing.context_from({"traceparent": f"00-{TRACE_ID}-{ENVOY_SPAN}-01"}) is None
    assert tracing.current_ids() is None


def test_tracing_off_imports_no_opentelemetry() -> None:
    """`signer.tracing` with tracing off loads nothing of OpenTelemetry (a fresh interpreter:
    this one has the SDK loaded for the tests above)."""
    probe = (
        "import sys, signer.tracing as t; assert not t.enabled(); t.span('x'); "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
