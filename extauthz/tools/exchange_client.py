"""`extauthz exchange`: trade a GitHub Actions job's OIDC token for a keymint token.

Run in a job that has `permissions: id-token: write`:

    - run: |
        extauthz exchange --audience https://keymint.example \\
            --token-url https://keymint.example/token --scope deploy --export-env
    - run: curl -H "Authorization: Bearer $KEYMINT_TOKEN" https://api.internal/deploy

1. GET `$ACTIONS_ID_TOKEN_REQUEST_URL&audience=<audience>` with
   `Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`; GitHub answers `{"value": <jwt>}`.
2. POST an RFC 8693 token exchange (form-encoded) to `--token-url` with that JWT as the
   subject token; keymint answers `{"access_token", "token_type", "expires_in", ...}`.
3. Print `::add-mask::<access token>` so GitHub masks it in the job log, then the chosen
   output: the token (default), the JSON answer, or `NAME=<token>` appended to the file that
   $GITHUB_ENV or $GITHUB_OUTPUT names.

Neither token appears anywhere else: not in error messages (text from a server is cut to printable
ASCII, with any token it echoes replaced by `[redacted]`) and not in logs. Redirects are not
followed, so neither credential is ever sent to another URL. Each request is retried, up to
`RetryPolicy.attempts` in all, on connection errors, timeouts, 5xx and 429, honouring Retry-After.
"""

# ruff: noqa: S105  (the grant-type and token-type URNs are names, not passwords)

from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
import logging
import math
import os
import re
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TextIO

import aiohttp
import yarl

from extauthz.errors import ExtAuthzError
from extauthz.server.token_exchange import (
    GRANT_TYPE_TOKEN_EXCHANGE,
    TOKEN_TYPE_ID_TOKEN,
    safe_description,
)

log = logging.getLogger(__name__)

REQUEST_URL_VARIABLE = "ACTIONS_ID_TOKEN_REQUEST_URL"
REQUEST_TOKEN_VARIABLE = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
DEFAULT_ENV_NAME = "KEYMINT_TOKEN"
MAX_RESPONSE_BYTES = 64 * 1024
DEFAULT_TIMEOUT_SECONDS = 10.0
PERMISSIONS_HINT = (
    "the job needs `permissions: id-token: write` (GitHub sets "
    f"${REQUEST_URL_VARIABLE} and ${REQUEST_TOKEN_VARIABLE} only then)"
)

# RFC 6750 b64token: what a bearer token may contain. Anything else could break out of the mask
# line or inject a second variable into $GITHUB_ENV.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Sleep = Callable[[float], Awaitable[None]]


class ExchangeClientError(ExtAuthzError):
    """The exchange could not be completed; the message says which step failed and why."""


class TokenEndpointError(ExchangeClientError):
    """The token endpoint refused the exchange with an OAuth error (RFC 6749 section 5.2)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        self.status = status
        self.error = error
        self.description = description
        detail = f"{error}: {description}" if description else error
        super().__init__(f"the token endpoint refused the exchange (HTTP {status}): {detail}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Up to `attempts` tries; waits `backoff * 2**n` seconds between them, or longer if the
    server's Retry-After asks; gives up rather than wait more than `max_delay` seconds."""

    attempts: int = 3
    backoff: float = 1.0
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff < 0 or self.max_delay < 0:
            raise ValueError("attempts must be at least 1, delays zero or more")

    def delay(self, failed_attempts: int, retry_after: float | None) -> float:
        backoff: float = self.backoff * 2.0 ** (failed_attempts - 1)
        return max(backoff, retry_after or 0.0)


@dataclass(frozen=True, slots=True)
class IdTokenRequest:
    """Where and how this job asks GitHub for an OIDC token, as GitHub set it in the job."""

    url: str
    bearer: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IdTokenRequest:
        url = env.get(REQUEST_URL_VARIABLE, "").strip()
        bearer = env.get(REQUEST_TOKEN_VARIABLE, "").strip()
        missing = [
            name
            for name, value in ((REQUEST_URL_VARIABLE, url), (REQUEST_TOKEN_VARIABLE, bearer))
            if not value
        ]
        if missing:
            raise ExchangeClientError(f"${' and $'.join(missing)} not set: {PERMISSIONS_HINT}")
        return cls(url, bearer)

    def url_for(self, audience: str) -> str:
        separator = "&" if urllib.parse.urlsplit(self.url).query else "?"
        return f"{self.url}{separator}audience={urllib.parse.quote(audience, safe='')}"


@dataclass(frozen=True, slots=True)
class ExchangedToken:
    """A successful RFC 8693 answer; `answer` is the JSON document as received."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int | None
    scope: str | None
    answer: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_answer(cls, answer: object) -> ExchangedToken:
        if not isinstance(answer, dict):
            raise ExchangeClientError("the token endpoint's answer is not a JSON object")
        token = answer.get("access_token")
        if not isinstance(token, str) or not _BEARER_TOKEN.fullmatch(token):
            raise ExchangeClientError("the token endpoint's answer has no usable access_token")
        token_type = answer.get("token_type")
        expires_in = answer.get("expires_in")
        scope = answer.get("scope")
        return cls(
            access_token=token,
            token_type=token_type if isinstance(token_type, str) else "",
            expires_in=expires_in
            if isinstance(expires_in, int) and not isinstance(expires_in, bool)
            else None,
            scope=scope if isinstance(scope, str) else None,
            answer=answer,
        )


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    retry_after: float | None


class ExchangeClient:
    """The two HTTP calls of an exchange, over one aiohttp session, with bounded retries."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._retry = retry or RetryPolicy()
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._sleep = sleep
        self._clock = clock

    async def github_oidc_token(self, request: IdTokenRequest, audience: str) -> str:
        """This job's OIDC token for `audience`, from GitHub's ID-token endpoint."""
        what = "GitHub's ID-token endpoint"
        answer = await self._with_retries(
            what,
            lambda: self._session.get(
                yarl.URL(request.url_for(audience), encoded=True),
                headers={"Authorization": f"bearer {request.bearer}", "Accept": "application/json"},
                allow_redirects=False,
                timeout=self._timeout,
            ),
        )
        secrets = (request.bearer,)
        if answer.status != 200:
            raise ExchangeClientError(
                f"{what} answered HTTP {answer.status}: {_shown(answer.body, secrets)}"
                + (f"; {PERMISSIONS_HINT}" if answer.status in (401, 403) else "")
            )
        document = _json_or_none(answer.body)
        value = document.get("value") if isinstance(document, dict) else None
        if not isinstance(value, str) or not value:
            raise ExchangeClientError(f"{what} answered without a token in 'value'")
        return value

    async def exchange(
        self,
        token_url: str,
        subject_token: str,
        *,
        audience: str | None = None,
        scope: str | None = None,
    ) -> ExchangedToken:
        """POST an RFC 8693 exchange of `subject_token` (an OIDC ID token) to `token_url`."""
        form = {
            "grant_type": GRANT_TYPE_TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": TOKEN_TYPE_ID_TOKEN,
        }
        if audience is not None:
            form["audience"] = audience
        if scope is not None:
            form["scope"] = scope
        answer = await self._with_retries(
            token_url,
            lambda: self._session.post(
                token_url,
                data=form,  # aiohttp form-encodes a dict: application/x-www-form-urlencoded
                headers={"Accept": "application/json"},
                allow_redirects=False,
                timeout=self._timeout,
            ),
        )
        document = _json_or_none(answer.body)
        if answer.status != 200:
            raise _endpoint_error(answer, document, (subject_token,))
        return ExchangedToken.from_answer(document)

    async def _with_retries(
        self, what: str, send: Callable[[], AbstractAsyncContextManager[aiohttp.ClientResponse]]
    ) -> _Answer:
        attempts = self._retry.attempts
        for attempt in range(1, attempts + 1):
            try:
                answer = await self._once(what, send)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                problem = type(exc).__name__
                if attempt == attempts:
                    raise ExchangeClientError(
                        f"{what}: no answer after {attempts} attempts ({problem})"
                    ) from None
                retry_after = None
            except (aiohttp.InvalidURL, ValueError):
                raise ExchangeClientError(f"{what}: not a valid URL") from None
            else:
                if not _transient(answer.status) or attempt == attempts:
                    return answer
                problem = f"HTTP {answer.status}"
                retry_after = answer.retry_after
            delay = self._retry.delay(attempt, retry_after)
            if delay > self._retry.max_delay:
                raise ExchangeClientError(
                    f"{what}: {problem}; the next try would be in {delay:.0f} s (Retry-After), "
                    f"longer than this client waits ({self._retry.max_delay:.0f} s)"
                )
            log.warning(
                "%s: %s; retrying in %.1f s (attempt %d of %d)",
                what,
                problem,
                delay,
                attempt + 1,
                attempts,
            )
            await self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _once(
        self, what: str, send: Callable[[], AbstractAsyncContextManager[aiohttp.ClientResponse]]
    ) -> _Answer:
        too_large = ExchangeClientError(f"{what} answered over {MAX_RESPONSE_BYTES} bytes")
        async with send() as response:
            if response.content_length is not None and response.content_length > MAX_RESPONSE_BYTES:
                raise too_large
            body = bytearray()
            async for chunk in response.content.iter_any():  # decompressed: caps a gzip bomb too
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise too_large
            retry_after = _retry_after(response.headers.get("Retry-After"), self._clock())
            return _Answer(response.status, bytes(body), retry_after)


def _transient(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


def _retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    seconds = moment.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _json_or_none(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _shown(body: bytes, secrets: Sequence[str]) -> str:
    """Text from a server, fit for a job log: secrets it echoes removed, printable, short."""
    text = body.decode("utf-8", errors="replace")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return safe_description(text.strip()) or "(empty body)"


def _endpoint_error(answer: _Answer, document: object, secrets: Sequence[str]) -> Exception:
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        description = document.get("error_description")
        return TokenEndpointError(
            answer.status,
            _shown(document["error"].encode(), secrets),
            _shown(description.encode(), secrets) if isinstance(description, str) else "",
        )
    return ExchangeClientError(
        f"the token endpoint answered HTTP {answer.status}: {_shown(answer.body, secrets)}"
    )


# --- output --------------------------------------------------------------------------------


class OutputFormat(StrEnum):
    TOKEN = "token"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class Output:
    """Where the token goes: printed (`format`), or appended as `NAME=token` to the file that
    $GITHUB_ENV (`env_name`) or $GITHUB_OUTPUT (`output_name`) names."""

    format: OutputFormat = OutputFormat.TOKEN
    env_name: str | None = None
    output_name: str | None = None

    def __post_init__(self) -> None:
        for name in (self.env_name, self.output_name):
            if name is not None and not _VARIABLE_NAME.fullmatch(name):
                raise ExchangeClientError(
                    f"{name!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
                )
        if self.env_name is not None and self.output_name is not None:
            raise ExchangeClientError("export to $GITHUB_ENV or $GITHUB_OUTPUT, not both")


def emit(token: ExchangedToken, output: Output, env: Mapping[str, str], out: TextIO) -> None:
    """The mask line first, then the chosen output; nothing else mentions the token."""
    print(f"::add-mask::{token.access_token}", file=out, flush=True)
    if output.env_name is not None:
        _append_variable(env, "GITHUB_ENV", output.env_name, token.access_token)
    elif output.output_name is not None:
        _append_variable(env, "GITHUB_OUTPUT", output.output_name, token.access_token)
    elif output.format is OutputFormat.JSON:
        print(json.dumps(token.answer, indent=2, sort_keys=True), file=out, flush=True)
    else:
        print(token.access_token, file=out, flush=True)


def _append_variable(env: Mapping[str, str], file_variable: str, name: str, value: str) -> None:
    path = env.get(file_variable, "").strip()
    if not path:
        raise ExchangeClientError(f"${file_variable} is not set (GitHub Actions sets it in a job)")
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{name}={value}\n")
    except OSError as exc:
        raise ExchangeClientError(
            f"${file_variable}: cannot append to {path}: {exc.strerror}"
        ) from None
    log.info("%s set in $%s", name, file_variable)


# --- the command ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExchangeOptions:
    oidc_audience: str
    token_url: str
    target_audience: str | None = None
    scope: str | None = None
    output: Output = field(default_factory=Output)
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    allow_http: bool = False

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.token_url)
        if not parts.hostname or not (
            parts.scheme == "https" or (self.allow_http and parts.scheme == "http")
        ):
            raise ExchangeClientError(
                f"--token-url {self.token_url!r} must be an https URL (http needs --allow-http)"
            )


async def run_exchange(
    options: ExchangeOptions,
    env: Mapping[str, str],
    *,
    out: TextIO,
    retry: RetryPolicy | None = None,
    sleep: Sleep = asyncio.sleep,
) -> ExchangedToken:
    """The whole command: OIDC token from GitHub, exchange at keymint, mask and output."""
    request = IdTokenRequest.from_env(env)
    async with aiohttp.ClientSession() as session:
        client = ExchangeClient(session, retry=retry, timeout=options.timeout, sleep=sleep)
        oidc_token = await client.github_oidc_token(request, options.oidc_audience)
        token = await client.exchange(
            options.token_url,
            oidc_token,
            audience=options.target_audience,
            scope=options.scope,
        )
    emit(token, options.output, env, out)
    return token


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    summary = "in a GitHub Actions job: exchange the job's OIDC token for a keymint token"
    parser = subparsers.add_parser("exchange", help=summary, description=summary)
    parser.add_argument("--audience", required=True, help="the OIDC token audience keymint accepts")
    parser.add_argument(
        "--token-url", required=True, help="keymint's token endpoint, e.g. https://HOST/token"
    )
    parser.add_argument(
        "--target-audience", help="the audience of the minted token (sent as `audience`)"
    )
    parser.add_argument("--scope", help="space-separated scopes to request")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--output",
        choices=[f.value for f in OutputFormat],
        default=OutputFormat.TOKEN.value,
        help="print the token, or the JSON answer (default: %(default)s)",
    )
    where.add_argument(
        "--export-env",
        nargs="?",
        const=DEFAULT_ENV_NAME,
        metavar="NAME",
        help=f"append NAME=token to $GITHUB_ENV instead (NAME default: {DEFAULT_ENV_NAME})",
    )
    where.add_argument(
        "--export-output", metavar="NAME", help="append NAME=token to $GITHUB_OUTPUT instead"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT_SECONDS,
        help="seconds per HTTP request (default: %(default)s)",
    )
    parser.add_argument(
        "--allow-http", action="store_true", help="allow an http:// token URL (testing only)"
    )
    parser.set_defaults(handler=run)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be more than zero seconds")
    return value


def options_from_args(args: argparse.Namespace) -> ExchangeOptions:
    return ExchangeOptions(
        oidc_audience=args.audience,
        token_url=args.token_url,
        target_audience=args.target_audience,
        scope=args.scope,
        output=Output(
            format=OutputFormat(args.output),
            env_name=args.export_env,
            output_name=args.export_output,
        ),
        timeout=args.timeout,
        allow_http=args.allow_http,
    )


def run(args: argparse.Namespace) -> int:
    token = asyncio.run(run_exchange(options_from_args(args), os.environ, out=sys.stdout))
    expires = "" if token.expires_in is None else f", expires in {token.expires_in} s"
    scope = "" if not token.scope else f", scope {token.scope!r}"
    print(f"keymint token issued{expires}{scope}", file=sys.stderr)
    return 0
