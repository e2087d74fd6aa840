"""The IdP side of `extauthz login`: discovery, the device flow, PKCE, and refresh.

`IdpClient` makes the HTTP calls (bounded answers, no redirects followed, every response's secret
kept out of messages). The flows are small objects over it with an injectable `sleep` and
`clock`, so their timing (RFC 8628's `interval`, `slow_down`, `expires_in`) is exact under test.

RFC 8628 section 3.5, as the device flow polls: `authorization_pending` waits `interval` and asks
again; `slow_down` adds 5 seconds to the interval for this and every later poll; `access_denied`
and `expired_token` end the login; the device code's `expires_in` is a deadline the client keeps
itself too. A connection error or a 5xx doubles the interval (the RFC's backoff) until then.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from extauthz.errors import ExtAuthzError
from extauthz.server.token_exchange import safe_description

log = logging.getLogger(__name__)

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5  # RFC 8628 section 3.2: when the IdP names none
SLOW_DOWN_SECONDS = 5  # RFC 8628 section 3.5
MAX_INTERVAL = 60
MAX_ANSWER_BYTES = 64 * 1024

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class LoginError(ExtAuthzError):
    """The login could not be completed; the message says which step and why."""


class LoginRefused(LoginError):
    """Someone said no: the user denied the request, the code expired, or keymint refused."""


@dataclass(frozen=True, slots=True)
class IdpMetadata:
    """What discovery says about the IdP, checked: endpoints on https (http only if allowed)."""

    issuer: str
    token_endpoint: str
    authorization_endpoint: str | None
    device_authorization_endpoint: str | None
    iss_in_authorization_response: bool  # RFC 9207

    @classmethod
    def from_document(cls, issuer: str, document: object, *, allow_http: bool) -> IdpMetadata:
        if not isinstance(document, dict) or document.get("issuer") != issuer:
            raise LoginError(f"the discovery document of {issuer} names another issuer")

        def endpoint(name: str, required: bool) -> str | None:
            value = document.get(name)
            if value is None and not required:
                return None
            if not isinstance(value, str) or not _acceptable_url(value, allow_http):
                raise LoginError(f"{issuer}: {name} is missing or not an https URL")
            return value

        token_endpoint = endpoint("token_endpoint", True)
        assert token_endpoint is not None
        return cls(
            issuer=issuer,
            token_endpoint=token_endpoint,
            authorization_endpoint=endpoint("authorization_endpoint", False),
            device_authorization_endpoint=endpoint("device_authorization_endpoint", False),
            iss_in_authorization_response=document.get(
                "authorization_response_iss_parameter_supported"
            )
            is True,
        )


def _acceptable_url(url: str, allow_http: bool) -> bool:
    parts = urllib.parse.urlsplit(url)
    schemes = ("https", "http") if allow_http else ("https",)
    return parts.scheme in schemes and bool(parts.hostname) and parts.username is None


@dataclass(frozen=True, slots=True)
class IdpTokens:
    """A token endpoint's answer: the ID token (what keymint takes) and maybe a refresh token."""

    id_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False, default=None)


class IdpAnswerError(LoginError):
    """The IdP's token endpoint answered an OAuth error (RFC 6749 section 5.2)."""

    def __init__(self, error: str, description: str) -> None:
        self.error = error
        self.description = description
        detail = f"{error}: {description}" if description else error
        super().__init__(f"the IdP refused: {detail}")


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    document: object


class IdpClient:
    """HTTP to one IdP, as a public client (`client_id` only, no secret)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        issuer: str,
        client_id: str,
        allow_http: bool = False,
        timeout: float = 10.0,
    ) -> None:
        if not _acceptable_url(issuer, allow_http) or issuer.endswith("/"):
            raise LoginError(f"--idp {issuer!r} must be an https URL without a trailing slash")
        self._session = session
        self.issuer = issuer
        self.client_id = client_id
        self._allow_http = allow_http
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def discover(self) -> IdpMetadata:
        url = f"{self.issuer}/.well-known/openid-configuration"
        answer = await self._send("GET", url)
        if answer.status != 200:
            raise LoginError(f"{url} answered HTTP {answer.status}")
        return IdpMetadata.from_document(self.issuer, answer.document, allow_http=self._allow_http)

    async def post_form(self, url: str, form: Mapping[str, str]) -> _Answer:
        return await self._send("POST", url, {"client_id": self.client_id, **form})

    async def token(self, metadata: IdpMetadata, form: Mapping[str, str]) -> IdpTokens:
        """POST to the token endpoint; IdpAnswerError for an OAuth error."""
        answer = await self.post_form(metadata.token_endpoint, form)
        return tokens_from(answer, secrets_sent=tuple(form.values()))

    async def _send(self, method: str, url: str, form: Mapping[str, str] | None = None) -> _Answer:
        try:
            async with self._session.request(
                method,
                url,
                data=form,
                headers={"Accept": "application/json"},
                allow_redirects=False,  # a credential is never sent on to another URL
                timeout=self._timeout,
            ) as response:
                too_large = LoginError(f"{url} answered over {MAX_ANSWER_BYTES} bytes")
                if response.content_length and response.content_length > MAX_ANSWER_BYTES:
                    raise too_large
                body = bytearray()
                async for chunk in response.content.iter_any():  # decompressed: caps a bomb too
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise too_large
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise IdpUnreachable(f"{url}: {type(exc).__name__}") from None
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            document = None
        return _Answer(status, document)


class IdpUnreachable(LoginError):
    """The IdP did not answer (a connection error or a timeout)."""


def tokens_from(answer: _Answer, *, secrets_sent: tuple[str, ...] = ()) -> IdpTokens:
    document = answer.document
    if answer.status != 200:
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            description = document.get("error_description")
            raise IdpAnswerError(
                _shown(document["error"], secrets_sent),
                _shown(description, secrets_sent) if isinstance(description, str) else "",
            )
        raise LoginError(f"the IdP's token endpoint answered HTTP {answer.status}")
    if not isinstance(document, dict):
        raise LoginError("the IdP's token endpoint answered something that is not JSON")
    id_token = document.get("id_token")
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        raise LoginError("the IdP answered without an id_token: the login scope needs 'openid'")
    refresh = document.get("refresh_token")
    return IdpTokens(id_token, refresh if isinstance(refresh, str) and refresh else None)


def _shown(text: str, secrets_sent: tuple[str, ...]) -> str:
    for secret in secrets_sent:
        if len(secret) >= 16:  # codes, verifiers, refresh tokens; not grant-type names
            text = text.replace(secret, "[redacted]")
    return safe_description(text)


# --- the device authorization grant (RFC 8628) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    """What the user is shown, and what the client polls with."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float

    @classmethod
    def from_answer(cls, answer: _Answer) -> DeviceAuthorization:
        document = answer.document
        if answer.status != 200 or not isinstance(document, dict):
            error = document.get("error") if isinstance(document, dict) else None
            raise LoginError(
                f"the IdP refused the device authorization (HTTP {answer.status}"
                + (f", {safe_description(error)})" if isinstance(error, str) else ")")
            )
        # Google still says `verification_url`, the name from a draft of RFC 8628.
        uri = document.get("verification_uri", document.get("verification_url"))
        device_code, user_code = document.get("device_code"), document.get("user_code")
        expires_in = _seconds(document.get("expires_in"))
        interval = _seconds(document.get("interval", DEFAULT_INTERVAL))
        if not (
            isinstance(device_code, str)
            and device_code
            and isinstance(user_code, str)
            and user_code.isprintable()
            and isinstance(uri, str)
            and uri.startswith(("https://", "http://"))
            and expires_in is not None
            and interval is not None
        ):
            raise LoginError("the IdP's device authorization answer is incomplete")
        complete = document.get("verification_uri_complete")
        return cls(
            device_code=device_code,
            user_code=user_code,
            verification_uri=uri,
            verification_uri_complete=complete if isinstance(complete, str) else None,
            expires_in=expires_in,
            interval=interval,
        )


def _seconds(value: object) -> float | None:
    """A positive number of seconds, up to a day, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and 0 < value <= 86400 else None


class DeviceFlow:
    """RFC 8628, polling as section 3.5 says (see the module docstring)."""

    def __init__(
        self,
        client: IdpClient,
        metadata: IdpMetadata,
        *,
        scope: str,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        if metadata.device_authorization_endpoint is None:
            raise LoginError(
                f"{metadata.issuer} offers no device authorization endpoint: use --flow pkce"
            )
        self._client = client
        self._metadata = metadata
        self._endpoint = metadata.device_authorization_endpoint
        self._scope = scope
        self._sleep = sleep
        self._clock = clock
        self.waits: list[float] = []  # every pause between polls, in seconds

    async def start(self) -> DeviceAuthorization:
        answer = await self._client.post_form(self._endpoint, {"scope": self._scope})
        return DeviceAuthorization.from_answer(answer)

    async def poll(self, authorization: DeviceAuthorization) -> IdpTokens:
        deadline = self._clock() + authorization.expires_in
        interval = max(1.0, authorization.interval)
        form = {"grant_type": DEVICE_CODE_GRANT, "device_code": authorization.device_code}
        while True:
            if self._clock() + interval >= deadline:
                raise LoginRefused("the sign-in code expired before it was approved")
            self.waits.append(interval)
            await self._sleep(interval)
            try:
                return await self._client.token(self._metadata, form)
            except IdpAnswerError as exc:
                if exc.error == "authorization_pending":
                    continue
                if exc.error == "slow_down":
                    interval = min(interval + SLOW_DOWN_SECONDS, MAX_INTERVAL)
                    continue
                if exc.error == "access_denied":
                    raise LoginRefused("the sign-in request was denied at the IdP") from None
                if exc.error == "expired_token":
                    raise LoginRefused("the sign-in code expired before it was approved") from None
                raise
            except IdpUnreachable as exc:
                interval = min(interval * 2, MAX_INTERVAL)
                log.warning("%s; polling again in %.0f s", exc, interval)


# --- the authorization code grant with PKCE (RFC 7636) ------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class PkceRequest:
    """One authorization request: its secrets stay here, the URL carries only their proofs."""

    redirect_uri: str
    scope: str
    verifier: str = field(repr=False, default_factory=lambda: secrets.token_urlsafe(64))
    state: str = field(repr=False, default_factory=lambda: secrets.token_urlsafe(24))
    nonce: str = field(repr=False, default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def challenge(self) -> str:
        return _b64(hashlib.sha256(self.verifier.encode("ascii")).digest())

    def url(self, metadata: IdpMetadata, client_id: str) -> str:
        if metadata.authorization_endpoint is None:
            raise LoginError(f"{metadata.issuer} offers no authorization endpoint")
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": self.redirect_uri,
                "scope": self.scope,
                "state": self.state,
                "nonce": self.nonce,
                "code_challenge": self.challenge,
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if urllib.parse.urlsplit(metadata.authorization_endpoint).query else "?"
        return f"{metadata.authorization_endpoint}{separator}{query}"

    def code_from(self, metadata: IdpMetadata, query: Mapping[str, str]) -> str:
        """The code of the redirect that answers this request; LoginError for any other."""
        state = query.get("state", "")
        if not hmac.compare_digest(state.encode(), self.state.encode()):
            raise LoginError("the redirect's state is not this login's: refused")
        issuer = query.get("iss")
        if (issuer is not None or metadata.iss_in_authorization_response) and issuer != (
            metadata.issuer
        ):
            raise LoginError("the redirect names another IdP (RFC 9207 iss): refused")
        if "error" in query:
            error = safe_description(query["error"])
            if error == "access_denied":
                raise LoginRefused("the sign-in request was denied at the IdP")
            raise LoginError(f"the IdP answered the sign-in with {error}")
        code = query.get("code", "")
        if not code:
            raise LoginError("the redirect carries no code")
        return code

    def check_nonce(self, id_token: str) -> None:
        """The ID token is this login's (OIDC Core 3.1.3.7): its nonce is ours. Its signature is
        keymint's to check; the nonce is only the client's."""
        try:
            payload = id_token.split(".")[1]
            claims: Any = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, IndexError):
            raise LoginError("the IdP's id_token is not a JWT") from None
        nonce = claims.get("nonce") if isinstance(claims, dict) else None
        if not isinstance(nonce, str) or not hmac.compare_digest(
            nonce.encode(), self.nonce.encode()
        ):
            raise LoginError("the id_token was not issued for this login (nonce): refused")


async def refresh(client: IdpClient, metadata: IdpMetadata, refresh_token: str) -> IdpTokens:
    """A new ID token from a refresh token (OIDC Core section 12)."""
    return await client.token(
        metadata, {"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


async def exchange_code(
    client: IdpClient, metadata: IdpMetadata, request: PkceRequest, code: str
) -> IdpTokens:
    tokens = await client.token(
        metadata,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": request.redirect_uri,
            "code_verifier": request.verifier,
        },
    )
    request.check_nonce(tokens.id_token)
    return tokens
