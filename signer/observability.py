"""Logs and traces of a keymint process (the gateway or a signer): their settings and the log setup.

    KEYMINT_LOG_FORMAT              text (default) | json: one JSON object per line
    KEYMINT_LOG_LEVEL               debug | info (default) | warning | error
    KEYMINT_TRACING                 off (default) | otlp: spans to an OpenTelemetry collector
    KEYMINT_TRACING_ENDPOINT        the collector's OTLP/gRPC address (http://127.0.0.1:4317)
    KEYMINT_TRACING_SAMPLE_RATIO    0..1 (1): traces started here; a caller's choice is kept

A line about one request carries that request's id (Envoy's x-request-id): `request_context` sets
it for everything logged while the request is handled, in either format. Structured fields ride on
a record as `extra={"fields": {...}}`: JSON writes them as members, text as ` key=value` after the
message. Nothing here adds a value a caller chose beyond the request id (bounded, printable).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import importlib.util
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from signer import tracing
from signer.errors import SignerError
from signer.settings import Kind, Setting

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_TRACING_ENDPOINT = "http://127.0.0.1:4317"
MAX_REQUEST_ID = 128  # Envoy's are UUIDs (36 characters)

OBSERVABILITY_SETTINGS = (
    Setting("KEYMINT_LOG_FORMAT", Kind.TEXT, "json"),
    Setting("KEYMINT_LOG_LEVEL", Kind.TEXT, "info"),
    Setting("KEYMINT_TRACING", Kind.TEXT, "otlp"),
    Setting("KEYMINT_TRACING_ENDPOINT", Kind.TEXT, "http://otel-collector.observability:4317"),
    Setting("KEYMINT_TRACING_SAMPLE_RATIO", Kind.NUMBER, "0.1"),
)


class ObservabilityError(SignerError):
    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


@dataclass(frozen=True, slots=True)
class ObservabilitySettings:
    log_format: str = "text"
    log_level: str = "info"
    tracing: bool = False
    tracing_endpoint: str = DEFAULT_TRACING_ENDPOINT
    tracing_sample_ratio: float = 1.0

    def start_tracing(self, service_name: str) -> None:
        """Export spans as these settings say (nothing when tracing is off)."""
        if self.tracing:
            tracing.export(self.tracing_endpoint, self.tracing_sample_ratio, service_name)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ObservabilitySettings:
        """ObservabilityError names the first setting that is wrong (each is independent of the
        others but for the tracing endpoint, which is refused without tracing)."""
        log_format = _choice(env, "KEYMINT_LOG_FORMAT", LOG_FORMATS, "text")
        log_level = _choice(env, "KEYMINT_LOG_LEVEL", LOG_LEVELS, "info")
        tracing = _choice(env, "KEYMINT_TRACING", ("off", "otlp"), "off") == "otlp"
        endpoint = env.get("KEYMINT_TRACING_ENDPOINT", "").strip()
        ratio_text = env.get("KEYMINT_TRACING_SAMPLE_RATIO", "").strip()
        if not tracing and (endpoint or ratio_text):
            name = "KEYMINT_TRACING_ENDPOINT" if endpoint else "KEYMINT_TRACING_SAMPLE_RATIO"
            raise ObservabilityError(
                name, "is set, but KEYMINT_TRACING is off: set KEYMINT_TRACING=otlp, or remove it"
            )
        if endpoint and not endpoint.startswith(("http://", "https://")):
            raise ObservabilityError(
                "KEYMINT_TRACING_ENDPOINT", f"{endpoint!r} is not an http:// or https:// URL"
            )
        ratio = 1.0
        if ratio_text:
            try:
                ratio = float(ratio_text)
            except ValueError:
                ratio = -1.0
            if not 0.0 <= ratio <= 1.0:
                raise ObservabilityError(
                    "KEYMINT_TRACING_SAMPLE_RATIO", f"{ratio_text!r} is not a number from 0 to 1"
                )
        if tracing and not tracing_installed():
            raise ObservabilityError(
                "KEYMINT_TRACING",
                "otlp needs the tracing extra, which is not installed: pip install "
                "'keymint[tracing]'",
            )
        return cls(log_format, log_level, tracing, endpoint or DEFAULT_TRACING_ENDPOINT, ratio)


def tracing_installed() -> bool:
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.grpc")
    )


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in allowed:
        raise ObservabilityError(name, f"{raw!r} is not one of {', '.join(allowed)}")
    return raw


# --- the request a line is about -------------------------------------------------------------

_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("keymint_request_id", default="")


def clean_request_id(raw: str) -> str:
    """A request id as it may appear in a line: printable, bounded; '' when it is neither."""
    if not raw or len(raw) > MAX_REQUEST_ID or not raw.isprintable() or '"' in raw:
        return ""
    return raw


@contextlib.contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """Every line logged inside carries `request_id`."""
    token = _REQUEST_ID.set(clean_request_id(request_id))
    try:
        yield
    finally:
        _REQUEST_ID.reset(token)


def current_request_id() -> str:
    return _REQUEST_ID.get()


# --- formats -----------------------------------------------------------------------------------


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    request_id = getattr(record, "request_id", "") or _REQUEST_ID.get()
    if request_id:
        fields["request_id"] = request_id
    extra = getattr(record, "fields", None)
    if isinstance(extra, Mapping):
        fields.update(extra)
    trace = _trace_ids()
    if trace is not None:
        fields.setdefault("trace_id", trace[0])
        fields.setdefault("span_id", trace[1])
    return fields


def _trace_ids() -> tuple[str, str] | None:
    return tracing.current_ids() if tracing.enabled() else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, RFC 3339), level, logger, message, then fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            document.setdefault(key, value)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """The human form: time, level, logger, message, then ` key=value` for each field."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if not fields:
            return text
        head, sep, rest = text.partition("\n")  # fields before any traceback
        shown = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        return f"{head} {shown}{sep}{rest}"


def _text_value(value: object) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


def configure_logging(
    settings: ObservabilitySettings | None = None,
    *,
    verbose: bool = False,
    stream: IO[str] | None = None,
) -> None:
    """Route every logger to `stream` (stderr) in the chosen format; `verbose` means debug."""
    settings = settings or ObservabilitySettings()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = "debug" if verbose else settings.log_level
    root.setLevel(getattr(logging, level.upper()))
