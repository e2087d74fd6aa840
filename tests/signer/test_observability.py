"""The two log formats operators choose between (KEYMINT_LOG_FORMAT): what a line carries, in
each, and that a terminal gets text unless told otherwise."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from signer.observability import (
    JsonFormatter,
    ObservabilitySettings,
    TextFormatter,
    clean_request_id,
    configure_logging,
    request_context,
)

DECISION = {"decision": "deny", "reason": "rego_denied", "subject": "spiffe://prod.test/a b"}


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger writing to a buffer; the test process's own handlers given back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_text_is_the_default_and_json_is_chosen() -> None:
    assert ObservabilitySettings.from_env({}).log_format == "text"
    assert ObservabilitySettings.from_env({"KEYMINT_LOG_FORMAT": "json"}).log_format == "json"


def test_a_json_line_is_one_object_with_the_request_id_and_the_fields(
    captured: io.StringIO,
) -> None:
    configure_logging(
        ObservabilitySettings.from_env({"KEYMINT_LOG_FORMAT": "json"}), stream=captured
    )
    with request_context("req-7"):
        logging.getLogger("extauthz.decision").info("decided", extra={"fields": DECISION})
    lines = captured.getvalue().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["level"] == "info"
    assert line["logger"] == "extauthz.decision"
    assert line["message"] == "decided"
    assert line["request_id"] == "req-7"
    assert {key: line[key] for key in DECISION} == DECISION
    assert line["time"].endswith("+00:00")


def test_an_exception_stays_inside_its_json_line(captured: io.StringIO) -> None:
    configure_logging(
        ObservabilitySettings.from_env({"KEYMINT_LOG_FORMAT": "json"}), stream=captured
    )
    try:
        raise ValueError("broken")
    except ValueError:
        logging.getLogger("x").exception("failed")
    lines = captured.getvalue().splitlines()
    assert len(lines) == 1  # a traceback never splits a record across lines
    assert "ValueError: broken" in json.loads(lines[0])["exception"]


def test_a_text_line_puts_the_fields_after_the_message_quoted_where_needed(
    captured: io.StringIO,
) -> None:
    configure_logging(ObservabilitySettings.from_env({}), stream=captured)
    with request_context("req-8"):
        logging.getLogger("extauthz.decision").info("decided", extra={"fields": DECISION})
    line = captured.getvalue().rstrip("\n")
    assert (
        " INFO extauthz.decision: decided request_id=req-8 decision=deny reason=rego_denied "
        in (line)
    )
    assert line.endswith(' subject="spiffe://prod.test/a b"')


def test_the_level_setting_drops_what_is_below_it(captured: io.StringIO) -> None:
    configure_logging(
        ObservabilitySettings.from_env({"KEYMINT_LOG_LEVEL": "warning"}), stream=captured
    )
    logging.getLogger("x").info("quiet")
    logging.getLogger("x").warning("loud")
    assert "quiet" not in captured.getvalue()
    assert "loud" in captured.getvalue()


@pytest.mark.parametrize("raw", ["", "x" * 1000, "a\nb", 'a"b', "tab\there"])
def test_a_request_id_that_could_break_a_line_is_left_out(raw: str) -> None:
    assert clean_request_id(raw) == ""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    with request_context(raw):
        assert "request_id" not in json.loads(JsonFormatter().format(record))
        assert "request_id" not in TextFormatter().format(record)
