"""`extauthz exchange` against a local stand-in for GitHub's ID-token endpoint and keymint's /token.

The CLI (`main`) runs its own event loop, so the tests that go through it run it in a thread
(`asyncio.to_thread`) beside the loop that serves the stand-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

from extauthz.cli import main
from extauthz.server.token_exchange import ExchangeError, parse_exchange
from extauthz.tools.exchange_client import (
    ExchangeClientError,
    ExchangeOptions,
    IdTokenRequest,
    Output,
    OutputFormat,
    RetryPolicy,
    TokenEndpointError,
    _retry_after,
    run_exchange,
)

REQUEST_TOKEN = "ghs_request-token-for-this-job"
OIDC_AUDIENCE = "https://keymint.example"
# Shaped like a JWT; the tests check it never leaks into the output.
OIDC_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOm9jdG8ifQ.c2lnbmF0dXJlLW9mLWdpdGh1Yg"
ACCESS_TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJrZXltaW50In0.bWludGVkLWJ5LWtleW1pbnQ"
TOKEN_ANSWER = {
    "access_token": ACCESS_TOKEN,
    "issued_token_type": "urn:ietf:params:oauth:token-type:jwt",
    "token_type": "Bearer",
    "expires_in": 900,
    "scope": "deploy",
}

Reply = tuple[int, Any, dict[str, str]]  # status, JSON body (or str for a raw body), headers


@dataclass
class StandIn:
    """GitHub's ID-token endpoint at /idtoken and keymint's token endpoint at /token."""

    base: str = ""
    token_replies: list[Reply] = field(default_factory=list)  # consumed first; then success
    idtoken_replies: list[Reply] = field(default_factory=list)
    idtoken_queries: list[dict[str, str]] = field(default_factory=list)
    token_forms: list[dict[str, str]] = field(default_factory=list)
    elsewhere_hits: int = 0

    @property
    def request_url(self) -> str:
        return f"{self.base}/idtoken?api-version=2.0"

    @property
    def token_url(self) -> str:
        return f"{self.base}/token"

    async def idtoken(self, request: web.Request) -> web.Response:
        self.idtoken_queries.append(dict(request.query))
        if request.headers.get("Authorization") != f"bearer {REQUEST_TOKEN}":
            return web.json_response({"message": "Bad credentials"}, status=401)
        if self.idtoken_replies:
            return _reply(self.idtoken_replies.pop(0))
        if request.query.get("api-version") != "2.0" or "audience" not in request.query:
            return web.json_response({"message": "bad query"}, status=400)
        return web.json_response({"count": 1, "value": OIDC_TOKEN})

    async def token(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:  # the gateway's own parser must accept what the client sends
            parse_exchange(request.headers.get("Content-Type", ""), body, request.query_string)
        except ExchangeError as refused:
            return web.json_response({"error": refused.error}, status=400)
        form = dict(parse_qsl(body.decode()))
        self.token_forms.append(form)
        if self.token_replies:
            return _reply(self.token_replies.pop(0))
        if form.get("subject_token") != OIDC_TOKEN:
            return web.json_response({"error": "invalid_request"}, status=400)
        return web.json_response(TOKEN_ANSWER, headers={"Cache-Control": "no-store"})

    async def elsewhere(self, request: web.Request) -> web.Response:
        self.elsewhere_hits += 1
        return web.json_response(TOKEN_ANSWER)


def _reply(reply: Reply) -> web.Response:
    status, body, headers = reply
    if isinstance(body, str):
        return web.Response(status=status, text=body, headers=headers)
    return web.json_response(body, status=status, headers=headers)


@contextlib.asynccontextmanager
async def stand_in() -> AsyncIterator[StandIn]:
    state = StandIn()
    app = web.Application()
    app.router.add_get("/idtoken", state.idtoken)
    app.router.add_post("/token", state.token)
    app.router.add_route("*", "/elsewhere", state.elsewhere)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    state.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    await web.SockSite(runner, sock).start()
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
def github_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The job's environment as GitHub sets it (the request URL is filled in per test)."""
    env_file = tmp_path / "github_env"
    env_file.write_text("EARLIER=1\n")
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN)
    monkeypatch.setenv("GITHUB_ENV", str(env_file))
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "github_output"))
    return env_file


def run_cli(
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    prepare: Callable[[StandIn], None] = lambda _: None,
) -> tuple[int, StandIn]:
    async def scenario() -> tuple[int, StandIn]:
        async with stand_in() as server:
            prepare(server)
            monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", server.request_url)
            argv = [
                "exchange",
                "--audience",
                OIDC_AUDIENCE,
                "--token-url",
                server.token_url,
                "--allow-http",
                *args,
            ]
            return await asyncio.to_thread(main, argv), server

    return asyncio.run(scenario())


def assert_no_oidc_token_shown(*outputs: str) -> None:
    for text in outputs:
        assert OIDC_TOKEN not in text
        assert REQUEST_TOKEN not in text


# --- success ---------------------------------------------------------------------------------


def test_prints_mask_line_then_token(
    github_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, server = run_cli(
        monkeypatch, "--target-audience", "https://api.internal", "--scope", "deploy read"
    )
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out == f"::add-mask::{ACCESS_TOKEN}\n{ACCESS_TOKEN}\n"
    assert ACCESS_TOKEN not in captured.err
    assert_no_oidc_token_shown(captured.out, captured.err)
    assert server.idtoken_queries == [{"api-version": "2.0", "audience": OIDC_AUDIENCE}]
    assert server.token_forms == [
        {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": OIDC_TOKEN,
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            "audience": "https://api.internal",
            "scope": "deploy read",
        }
    ]


def test_optional_fields_are_not_sent(
    github_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, server = run_cli(monkeypatch)
    assert code == 0
    assert set(server.token_forms[0]) == {"grant_type", "subject_token", "subject_token_type"}


def test_export_env_appends_to_github_env(
    github_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_cli(monkeypatch, "--export-env")
    assert code == 0
    assert github_env.read_text() == f"EARLIER=1\nKEYMINT_TOKEN={ACCESS_TOKEN}\n"
    captured = capsys.readouterr()
    assert captured.out == f"::add-mask::{ACCESS_TOKEN}\n"  # the token itself only in the file
    assert ACCESS_TOKEN not in captured.err
    assert "expires in 900 s" in captured.err


def test_export_env_with_a_name(
    github_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(monkeypatch, "--export-env", "DEPLOY_TOKEN")[0] == 0
    assert github_env.read_text().endswith(f"\nDEPLOY_TOKEN={ACCESS_TOKEN}\n")


def test_export_output(
    github_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_cli(monkeypatch, "--export-output", "token")[0] == 0
    assert (tmp_path / "github_output").read_text() == f"token={ACCESS_TOKEN}\n"
    assert capsys.readouterr().out == f"::add-mask::{ACCESS_TOKEN}\n"


def test_json_output(
    github_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(monkeypatch, "--output", "json")[0] == 0
    mask, _, document = capsys.readouterr().out.partition("\n")
    assert mask == f"::add-mask::{ACCESS_TOKEN}"
    assert json.loads(document) == TOKEN_ANSWER


def test_bad_export_name_is_refused_before_any_request(
    github_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, server = run_cli(monkeypatch, "--export-env", "BAD=NAME")
    assert code == 2
    assert "not a variable name" in capsys.readouterr().err
    assert server.idtoken_queries == []


# --- errors ----------------------------------------------------------------------------------


def test_missing_github_variables_give_the_permissions_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_URL", raising=False)
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", raising=False)
    argv = ["exchange", "--audience", OIDC_AUDIENCE, "--token-url", "https://keymint.test/token"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "permissions: id-token: write" in err
    assert "ACTIONS_ID_TOKEN_REQUEST_URL" in err
    assert "ACTIONS_ID_TOKEN_REQUEST_TOKEN" in err


def test_one_missing_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"ACTIONS_ID_TOKEN_REQUEST_URL": "https://example.test/x?api-version=2.0"}
    with pytest.raises(ExchangeClientError, match=r"^\$ACTIONS_ID_TOKEN_REQUEST_TOKEN not set"):
        IdTokenRequest.from_env(env)


def test_token_endpoint_error_is_shown_with_status(
    github_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    denial = {
        "error": "invalid_target",
        "error_description": "audience_not_allowed: https://prod.internal is not granted",
    }
    code, _ = run_cli(
        monkeypatch, prepare=lambda server: server.token_replies.append((400, denial, {}))
    )
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        "HTTP 400): invalid_target: audience_not_allowed: https://prod.internal is not granted"
        in captured.err
    )
    assert github_env.read_text() == "EARLIER=1\n"


def test_echoed_subject_token_is_redacted(
    github_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    echo = {"error": "invalid_request", "error_description": f"bad token {OIDC_TOKEN}\n::x::"}
    code, _ = run_cli(
        monkeypatch, prepare=lambda server: server.token_replies.append((400, echo, {}))
    )
    assert code == 2
    captured = capsys.readouterr()
    assert_no_oidc_token_shown(captured.out, captured.err)
    assert "bad token [redacted]?::x::" in captured.err  # no newline to start a workflow command


def test_non_json_error_body_is_shown(
    github_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_cli(
        monkeypatch,
        prepare=lambda server: server.token_replies.append((404, "<h1>no such page</h1>", {})),
    )
    assert code == 2
    assert "answered HTTP 404: <h1>no such page</h1>" in capsys.readouterr().err


def test_github_refusal_mentions_permissions(
    github_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, server = run_cli(
        monkeypatch,
        prepare=lambda server: server.idtoken_replies.append(
            (403, {"message": "Resource not accessible by integration"}, {})
        ),
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "HTTP 403" in err
    assert "Resource not accessible by integration" in err
    assert "permissions: id-token: write" in err
    assert server.token_forms == []


def test_access_token_that_could_inject_is_refused(
    github_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = {**TOKEN_ANSWER, "access_token": "abc\nNODE_OPTIONS=--require=/tmp/x.js"}
    code, _ = run_cli(
        monkeypatch,
        "--export-env",
        prepare=lambda server: server.token_replies.append((200, hostile, {})),
    )
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no usable access_token" in captured.err
    assert github_env.read_text() == "EARLIER=1\n"


def test_oversized_answer_is_refused(
    github_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = {**TOKEN_ANSWER, "padding": "x" * 100_000}
    code, _ = run_cli(
        monkeypatch, prepare=lambda server: server.token_replies.append((200, huge, {}))
    )
    assert code == 2
    captured = capsys.readouterr()
    assert "answered over 65536 bytes" in captured.err
    assert captured.out == ""


def test_redirect_is_not_followed(
    github_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def redirect(server: StandIn) -> None:
        server.token_replies.append((307, "", {"Location": f"{server.base}/elsewhere"}))

    code, server = run_cli(monkeypatch, prepare=redirect)
    assert code == 2
    assert "HTTP 307" in capsys.readouterr().err
    assert server.elsewhere_hits == 0


def test_http_token_url_needs_allow_http(
    github_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", "http://127.0.0.1:9/idtoken?x=1")
    argv = ["exchange", "--audience", OIDC_AUDIENCE, "--token-url", "http://keymint.test/token"]
    assert main(argv) == 2
    assert "must be an https URL" in capsys.readouterr().err


# --- retries (the library entry point, with an injected sleep) -------------------------------


def recording_sleep() -> tuple[list[float], Callable[[float], Awaitable[None]]]:
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    return delays, sleep


def exchange_with(
    prepare: Callable[[StandIn], None], *, token_url: str | None = None
) -> tuple[str, list[float], StandIn]:
    delays, sleep = recording_sleep()

    async def scenario() -> tuple[str, StandIn]:
        async with stand_in() as server:
            prepare(server)
            env = {
                "ACTIONS_ID_TOKEN_REQUEST_URL": server.request_url,
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN,
            }
            options = ExchangeOptions(
                oidc_audience=OIDC_AUDIENCE,
                token_url=token_url or server.token_url,
                output=Output(format=OutputFormat.TOKEN),
                allow_http=True,
                timeout=5.0,
            )
            out = io.StringIO()
            await run_exchange(options, env, out=out, sleep=sleep, retry=RetryPolicy())
            return out.getvalue(), server

    out, server = asyncio.run(scenario())
    return out, delays, server


def test_503_then_200_honours_retry_after() -> None:
    def busy_once(server: StandIn) -> None:
        server.token_replies.append(
            (503, {"error": "temporarily_unavailable"}, {"Retry-After": "7"})
        )

    out, delays, server = exchange_with(busy_once)
    assert out == f"::add-mask::{ACCESS_TOKEN}\n{ACCESS_TOKEN}\n"
    assert delays == [7.0]
    assert len(server.token_forms) == 2


def test_429_then_5xx_then_200_backs_off() -> None:
    def busy_twice(server: StandIn) -> None:
        server.token_replies.extend([(429, {"error": "slow_down"}, {}), (502, "bad gateway", {})])

    out, delays, server = exchange_with(busy_twice)
    assert out.endswith(f"{ACCESS_TOKEN}\n")
    assert delays == [1.0, 2.0]
    assert len(server.token_forms) == 3


def test_github_endpoint_is_retried_too() -> None:
    out, delays, server = exchange_with(
        lambda server: server.idtoken_replies.append((500, {"message": "oops"}, {}))
    )
    assert out.endswith(f"{ACCESS_TOKEN}\n")
    assert delays == [1.0]
    assert len(server.idtoken_queries) == 2


def test_gives_up_after_three_attempts_with_the_last_error() -> None:
    unavailable: Reply = (
        503,
        {"error": "temporarily_unavailable", "error_description": "no quorum"},
        {},
    )
    with pytest.raises(TokenEndpointError) as caught:
        exchange_with(lambda server: server.token_replies.extend([unavailable] * 3))
    assert caught.value.status == 503
    assert "temporarily_unavailable: no quorum" in str(caught.value)


def test_client_errors_are_not_retried() -> None:
    with pytest.raises(TokenEndpointError, match="invalid_scope"):
        exchange_with(
            lambda server: server.token_replies.extend(
                [(400, {"error": "invalid_scope"}, {}), (400, {"error": "invalid_scope"}, {})]
            )
        )


def test_retry_after_longer_than_we_wait_gives_up_at_once() -> None:
    with pytest.raises(ExchangeClientError, match=r"next try would be in 120 s \(Retry-After\)"):
        exchange_with(
            lambda server: server.token_replies.append(
                (429, {"error": "slow_down"}, {"Retry-After": "120"})
            )
        )


def test_connection_refused_is_retried_then_reported() -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    delays, sleep = recording_sleep()

    async def scenario() -> None:
        async with stand_in() as server:
            env = {
                "ACTIONS_ID_TOKEN_REQUEST_URL": server.request_url,
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN,
            }
            options = ExchangeOptions(
                oidc_audience=OIDC_AUDIENCE,
                token_url=f"http://127.0.0.1:{port}/token",
                allow_http=True,
            )
            await run_exchange(options, env, out=io.StringIO(), sleep=sleep)

    with pytest.raises(ExchangeClientError, match="no answer after 3 attempts"):
        asyncio.run(scenario())
    assert delays == [1.0, 2.0]


# --- small parts -----------------------------------------------------------------------------


def test_audience_is_appended_url_encoded() -> None:
    request = IdTokenRequest("https://gh.test/idtoken?api-version=2.0", REQUEST_TOKEN)
    assert request.url_for("https://keymint.example/a b") == (
        "https://gh.test/idtoken?api-version=2.0&audience=https%3A%2F%2Fkeymint.example%2Fa%20b"
    )
    assert IdTokenRequest("https://gh.test/idtoken", "t").url_for("x") == (
        "https://gh.test/idtoken?audience=x"
    )
    assert REQUEST_TOKEN not in repr(request)


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert _retry_after("5", now) == 5.0
    assert _retry_after(None, now) is None
    assert _retry_after("soon", now) is None
    assert _retry_after("\u00b2", now) is None  # a digit to str.isdigit, not to HTTP
    assert _retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now) == 30.0
    assert _retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now) == 0.0  # in the past
