"""OpenTelemetry tracing for the gateway and the signers: optional, and free when off.

With KEYMINT_TRACING=otlp (signer.observability) a process exports its spans over OTLP/gRPC to a
collector; the `tracing` extra (opentelemetry-api, -sdk and the OTLP exporter) must be installed.
Without it, nothing from OpenTelemetry is imported: `enabled()` is a module flag, `span()` hands
back a shared no-op context manager, and the gateway's hot path reads the flag once per Check.

Context crosses processes as W3C trace context (`traceparent`, `tracestate`): the gateway reads it
from the Check call's gRPC metadata (Envoy's gRPC client puts its ext_authz span there when Envoy
traces) or else from the request's headers, and puts its own into the metadata of each Sign call,
where the signer reads it. Sampling is parent-based: a caller's decision is kept; a trace started
here is sampled at KEYMINT_TRACING_SAMPLE_RATIO.

Spans carry names and identifiers only (signer ids, the decision, the reason, the subject): never a
token, a share, a nonce or a key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer


TRACER_NAME = "keymint"
SIGN_SPAN = "keymint.signer.v1.Signer/Sign"  # a Sign call's span, on both sides of it
PROPAGATED = ("traceparent", "tracestate")

_enabled = False
_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()


def enabled() -> bool:
    return _enabled


def export(endpoint: str, sample_ratio: float, service_name: str) -> None:
    """Export spans over OTLP/gRPC to `endpoint`, sampling `sample_ratio` of new traces."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    use_provider(provider)


def use_provider(provider: TracerProvider) -> None:
    """Trace through `provider` (tests give one with an in-memory exporter). The global
    OpenTelemetry provider is left alone: a library in the same process keeps its own."""
    global _enabled, _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer(TRACER_NAME)
    _enabled = True


def shutdown() -> None:
    """Export what is buffered, then trace nothing more."""
    global _enabled, _tracer, _provider
    provider, _provider, _tracer, _enabled = _provider, None, None, False
    if provider is not None:
        provider.shutdown()


def span(
    name: str,
    *,
    server: bool = False,
    client: bool = False,
    parent: Context | None = None,
    attributes: Mapping[str, str | int | bool] | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A span around a block (the current one's child, or `parent`'s), or nothing when off."""
    if not _enabled or _tracer is None:
        return _NOTHING
    from opentelemetry.trace import SpanKind

    kind = SpanKind.SERVER if server else SpanKind.CLIENT if client else SpanKind.INTERNAL
    return _tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=dict(attributes or {})
    )


def annotate(current: Span | None, attributes: Mapping[str, str | int | bool]) -> None:
    """Set `attributes` on the span `span()` gave (None when tracing is off: nothing)."""
    if current is not None:
        current.set_attributes(dict(attributes))


def context_from(*carriers: Iterable[tuple[str, Any]] | Mapping[str, Any]) -> Context | None:
    """The trace context of the first carrier (gRPC metadata pairs, or headers) that has one."""
    if not _enabled:
        return None
    from opentelemetry.trace import get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    for carrier in carriers:
        pairs = carrier.items() if isinstance(carrier, Mapping) else carrier
        values = {str(k).lower(): str(v) for k, v in pairs if str(k).lower() in PROPAGATED and v}
        if "traceparent" not in values:
            continue
        context = propagator.extract(values)
        if get_current_span(context).get_span_context().is_valid:
            return context
    return None


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """The current span's context as gRPC metadata, for the call about to be made."""
    if not _enabled:
        return ()
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return tuple(carrier.items())


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span in hex, for log lines; None outside a span."""
    if not _enabled:
        return None
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


@contextlib.contextmanager
def detached() -> Iterator[None]:
    """No current span inside (background work that no request caused)."""
    if not _enabled:
        yield
        return
    from opentelemetry import context

    token = context.attach(context.Context())
    try:
        yield
    finally:
        context.detach(token)
