"""A local identity provider standing in for the organisation's IdP (Okta, Google, Entra ID...).

It implements, for real, on 127.0.0.1 (port chosen by the OS):
- OpenID discovery (`/.well-known/openid-configuration`) and its JWKS (`/keys`);
- the device authorization grant (RFC 8628): `/device_authorization`, polling at `/token` with
  `authorization_pending`, `slow_down` (a poll sooner than the interval adds 5 s to it),
  `access_denied` and `expired_token`;
- the authorization code grant with PKCE (RFC 7636, S256 only) on a loopback redirect (RFC 8252):
  `/authorize` redirects to the client's `http://127.0.0.1:<port>/...` with `code`, `state` and
  `iss` (RFC 9207), and `/token` checks the code verifier, the client and the redirect URI;
- refresh tokens, rotated on every use.

The user is the test. In process: `approve(user_code, "ada")`, `deny(user_code)`, `login_as =
"ada"`. Through HTTP, as a browser would: GET `verification_uri_complete` with `&user=ada` (and
`&decision=deny` to refuse); GET the authorization URL (the user `login_as` names is signed in)
and follow the redirect to the client's loopback listener.

ID tokens are RS256, `aud` the client id, with `email`, `email_verified`, `groups`, `name`,
and `nonce` when the authorization request carried one.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from extauthz.dev.issuers import JwtKey, sign_token
from extauthz.dev.servers import LoopbackServer

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CLIENT_ID = "keymint-cli"


@dataclass(frozen=True, slots=True)
class User:
    sub: str
    email: str
    email_verified: bool = True
    groups: tuple[str, ...] = ()
    name: str = ""


@dataclass
class Device:
    device_code: str
    user_code: str
    client_id: str
    scope: str
    expires_at: float
    interval: int
    last_poll: float | None = None
    decision: str = "pending"  # pending, approved, denied, used
    user: User | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """What a code or a refresh token stands for."""

    client_id: str
    user: User
    scope: str
    nonce: str | None = None
    redirect_uri: str = ""
    challenge: str = ""
    expires_at: float = 0.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class LocalIdp(LoopbackServer):
    """See the module docstring. A test may change `interval`, `force_slow_down`, `login_as`,
    `refresh_tokens` (False: none issued), `id_token_lifetime` at any time."""

    def __init__(
        self,
        *,
        key: JwtKey,
        users: Mapping[str, User],
        client_id: str = CLIENT_ID,
        clock: Callable[[], float] = time.time,
        interval: int = 5,
        device_expires_in: int = 600,
        id_token_lifetime: int = 3600,
    ) -> None:
        super().__init__()
        self.key = key
        self.users = dict(users)
        self.client_id = client_id
        self.clock = clock
        self.interval = interval
        self.device_expires_in = device_expires_in
        self.id_token_lifetime = id_token_lifetime
        self.force_slow_down = 0  # answer slow_down to this many polls, whatever their timing
        self.login_as: str | None = None  # who is signed in at /authorize (None: refuses)
        self.refresh_tokens = True
        self.devices: dict[str, Device] = {}
        self.codes: dict[str, Grant] = {}
        self.refresh: dict[str, Grant] = {}
        self.polls: list[float] = []  # when each device-code poll arrived (the IdP's clock)
        self.served: Counter[str] = Counter()

    # --- lifecycle -----------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/keys", self._jwks)
        app.router.add_post("/device_authorization", self._device_authorization)
        app.router.add_get("/device", self._device_page)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)

    # --- the user ------------------------------------------------------------------------

    def device(self, user_code: str) -> Device:
        return next(d for d in self.devices.values() if d.user_code == user_code)

    def approve(self, user_code: str, user: str) -> None:
        device = self.device(user_code)
        device.decision, device.user = "approved", self.users[user]

    def deny(self, user_code: str) -> None:
        self.device(user_code).decision = "denied"

    def claims_for(self, user: str | User, *, nonce: str | None = None) -> dict[str, Any]:
        """The claims of an ID token for `user`, issued now."""
        person = self.users[user] if isinstance(user, str) else user
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": person.sub,
            "aud": self.client_id,
            "iat": now,
            "exp": now + self.id_token_lifetime,
            "auth_time": now,
            "email": person.email,
            "email_verified": person.email_verified,
            "groups": list(person.groups),
            "name": person.name or person.email,
            "jti": secrets.token_urlsafe(12),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        return claims

    def id_token(self, user: str | User, *, nonce: str | None = None, **overrides: Any) -> str:
        """An ID token for `user`, as /token issues it (also for tests that need one directly)."""
        return sign_token(self.key, {**self.claims_for(user, nonce=nonce), **overrides})

    # --- HTTP ----------------------------------------------------------------------------

    async def _discovery(self, request: web.Request) -> web.Response:
        self.served["discovery"] += 1
        base = self.issuer
        return web.json_response(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "device_authorization_endpoint": f"{base}/device_authorization",
                "jwks_uri": f"{base}/keys",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", DEVICE_CODE_GRANT, "refresh_token"],
                "code_challenge_methods_supported": ["S256"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["none"],
                "scopes_supported": ["openid", "email", "profile", "groups", "offline_access"],
                "authorization_response_iss_parameter_supported": True,
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self.served["jwks"] += 1
        return web.json_response({"keys": [self.key.public_jwk()]})

    async def _device_authorization(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != self.client_id:
            return _error(401, "invalid_client")
        self.served["device_authorization"] += 1
        device_code = secrets.token_urlsafe(32)
        letters = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 section 6.1: no vowels, no confusion
        user_code = "".join(secrets.choice(letters) for _ in range(8))
        self.devices[device_code] = Device(
            device_code=device_code,
            user_code=user_code,
            client_id=self.client_id,
            scope=str(form.get("scope", "")),
            expires_at=self.clock() + self.device_expires_in,
            interval=self.interval,
        )
        uri = f"{self.issuer}/device"
        return web.json_response(
            {
                "device_code": device_code,
                "user_code": f"{user_code[:4]}-{user_code[4:]}",
                "verification_uri": uri,
                "verification_uri_complete": f"{uri}?user_code={user_code}",
                "expires_in": self.device_expires_in,
                "interval": self.interval,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _device_page(self, request: web.Request) -> web.Response:
        """The verification page, reduced to its decision: the user (named) approves or denies."""
        code = request.query.get("user_code", "").replace("-", "")
        try:
            device = self.device(code)
        except StopIteration:
            return web.Response(status=404, text="unknown code")
        user = request.query.get("user", "")
        if request.query.get("decision", "approve") == "deny":
            self.deny(code)
            return web.Response(text="denied")
        if user not in self.users:
            return web.Response(status=400, text="who are you?")
        device.decision, device.user = "approved", self.users[user]
        return web.Response(text=f"approved as {user}")

    async def _authorize(self, request: web.Request) -> web.Response:
        query = request.query
        redirect_uri = query.get("redirect_uri", "")
        parts = urllib.parse.urlsplit(redirect_uri)
        # RFC 8252 section 7.3: loopback IP literal, any port, http.
        if query.get("client_id") != self.client_id or not (
            parts.scheme == "http" and parts.hostname == "127.0.0.1" and parts.port
        ):
            return web.Response(status=400, text="invalid client or redirect_uri")
        back: dict[str, str] = {"state": query.get("state", ""), "iss": self.issuer}
        if query.get("response_type") != "code":
            back["error"] = "unsupported_response_type"
        elif query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            back["error"] = "invalid_request"
        elif self.login_as is None:
            back["error"] = "access_denied"
        else:
            code = secrets.token_urlsafe(24)
            self.codes[code] = Grant(
                client_id=self.client_id,
                user=self.users[self.login_as],
                scope=query.get("scope", ""),
                nonce=query.get("nonce"),
                redirect_uri=redirect_uri,
                challenge=query["code_challenge"],
                expires_at=self.clock() + 60,
            )
            back["code"] = code
        self.served["authorize"] += 1
        location = f"{redirect_uri}?{urllib.parse.urlencode(back)}"
        raise web.HTTPFound(location)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != self.client_id:
            return _error(401, "invalid_client")
        grant_type = form.get("grant_type")
        self.served[f"token:{grant_type!s}"] += 1
        if grant_type == DEVICE_CODE_GRANT:
            return self._device_token(str(form.get("device_code", "")))
        if grant_type == "authorization_code":
            return self._code_token(form)
        if grant_type == "refresh_token":
            grant = self.refresh.pop(str(form.get("refresh_token", "")), None)
            if grant is None:
                return _error(400, "invalid_grant")
            return self._tokens(grant)
        return _error(400, "unsupported_grant_type")

    def _device_token(self, device_code: str) -> web.Response:
        device = self.devices.get(device_code)
        if device is None or device.decision == "used":
            return _error(400, "invalid_grant")
        now = self.clock()
        self.polls.append(now)
        too_soon = device.last_poll is not None and now - device.last_poll < device.interval
        device.last_poll = now
        if now >= device.expires_at:
            return _error(400, "expired_token")
        if self.force_slow_down > 0 or too_soon:
            self.force_slow_down = max(0, self.force_slow_down - 1)
            device.interval += 5  # RFC 8628 section 3.5: the client must add 5 s too
            return _error(400, "slow_down")
        if device.decision == "denied":
            return _error(400, "access_denied")
        if device.decision != "approved" or device.user is None:
            return _error(400, "authorization_pending")
        device.decision = "used"
        return self._tokens(Grant(self.client_id, device.user, device.scope))

    def _code_token(self, form: Mapping[str, Any]) -> web.Response:
        grant = self.codes.pop(str(form.get("code", "")), None)
        if grant is None or self.clock() >= grant.expires_at:
            return _error(400, "invalid_grant")
        if form.get("redirect_uri") != grant.redirect_uri:
            return _error(400, "invalid_grant")
        verifier = str(form.get("code_verifier", ""))
        if not 43 <= len(verifier) <= 128:
            return _error(400, "invalid_grant")
        if _b64(hashlib.sha256(verifier.encode()).digest()) != grant.challenge:
            return _error(400, "invalid_grant")
        return self._tokens(grant)

    def _tokens(self, grant: Grant) -> web.Response:
        body: dict[str, Any] = {
            "access_token": secrets.token_urlsafe(24),
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": grant.scope,
            "id_token": self.id_token(grant.user, nonce=grant.nonce),
        }
        if self.refresh_tokens and "offline_access" in grant.scope.split():
            refresh = secrets.token_urlsafe(32)
            self.refresh[refresh] = replace(grant, nonce=None)
            body["refresh_token"] = refresh
        return web.json_response(body, headers={"Cache-Control": "no-store"})


def _error(status: int, error: str) -> web.Response:
    return web.json_response({"error": error}, status=status, headers={"Cache-Control": "no-store"})


DEFAULT_USERS: Mapping[str, User] = {
    "ada": User("00u-ada", "ada@example.com", groups=("platform", "eng"), name="Ada"),
    "bob": User("00u-bob", "bob@example.com", groups=("sales",), name="Bob"),
    "eve": User("00u-eve", "ada@example.com", email_verified=False, groups=("eng",), name="Eve"),
}
