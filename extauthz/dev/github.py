"""A local OIDC issuer that behaves like GitHub Actions' token service (the local stack, tests).

It serves `{issuer}/.well-known/openid-configuration` and `{issuer}/.well-known/jwks` over real
HTTP on 127.0.0.1 (port chosen by the OS), with Cache-Control and ETag, counts what it serves,
can rotate keys and can go down. `mint()` signs tokens shaped like GitHub's documented example
(`data/github-example-token.json`: the example token in GitHub's documentation of Actions OIDC,
"About security hardening with OpenID Connect", templating resolved for github.com), with
iat/nbf/exp from the caller's clock.

    async with LocalOidcIssuer(clock=clock) as issuer:  # or start() / stop()
        token = issuer.mint({"repository_id": "99"}, {"kid": "other"})
        ...  # then: issuer.served["jwks"], issuer.rotate(new_key), issuer.down = True

Tokens that no honest issuer would produce (alg none, HS256, foreign keys) are built with
`compact_jws` and a signer of the test's choosing.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from extauthz.dev.servers import LoopbackServer

EXAMPLE = json.loads(
    resources.files("extauthz.dev").joinpath("data/github-example-token.json").read_text()
)
DEFAULT_AUDIENCE = "https://keymint.test/token-exchange"
TOKEN_LIFETIME = 300  # exp - iat, as in most real GitHub tokens
NOT_BEFORE_SKEW = 600  # iat - nbf, as in GitHub's example

Signer = Callable[[bytes], bytes]


class _Remove:
    def __repr__(self) -> str:
        return "REMOVE"


REMOVE: Final = _Remove()  # as an override value: delete that claim or header member


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact_jws(header: Mapping[str, Any], payload: Mapping[str, Any], sign: Signer | None) -> str:
    """`b64(header).b64(payload).b64(sign(signing input))`; no signer gives an empty signature."""
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)
    )
    signature = sign(signing_input.encode("ascii")) if sign is not None else b""
    return f"{signing_input}.{b64url(signature)}"


def rs256_signer(private_key: rsa.RSAPrivateKey) -> Signer:
    return lambda data: private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def hs256_signer(secret: bytes) -> Signer:
    def sign(data: bytes) -> bytes:
        mac = hmac.HMAC(secret, hashes.SHA256())
        mac.update(data)
        return mac.finalize()

    return sign


def _apply(base: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    for name, value in (overrides or {}).items():
        if value is REMOVE:
            base.pop(name, None)
        else:
            base[name] = value
    return base


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An RSA key and the kid it is published under."""

    kid: str
    private_key: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def generate(cls, kid: str, bits: int = 2048) -> SigningKey:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=bits))

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(
            jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key())
        )
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}


class LocalOidcIssuer(LoopbackServer):
    """See the module docstring. Attributes a test may change at any time: `down`, `max_age`,
    `published` (the keys in the JWKS), `extra_jwks` (raw JWKs published after them),
    `discovery_overrides` (members replacing the discovery document's)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        keys: Iterable[SigningKey] | None = None,
        path: str = "",
        audience: str = DEFAULT_AUDIENCE,
        max_age: int = 300,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.published: list[SigningKey] = list(keys or [SigningKey.generate("key-1")])
        self.path = path  # "" for github.com's shape, "/_services/token" for GHES, "/<slug>"
        self.audience = audience
        self.max_age = max_age
        self.down = False
        self.extra_jwks: list[Any] = []  # raw members, not necessarily valid JWKs
        self.discovery_overrides: dict[str, Any] = {}
        self.served: Counter[str] = Counter()  # "discovery", "jwks", "jwks_not_modified", "down"

    # --- lifecycle -------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_get(f"{self.path}/.well-known/openid-configuration", self._discovery)
        app.router.add_get(f"{self.path}/.well-known/jwks", self._jwks)

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/.well-known/jwks"

    @property
    def jwks_fetches(self) -> int:
        """JWKS requests answered, whether with keys (200) or "not modified" (304)."""
        return self.served["jwks"] + self.served["jwks_not_modified"]

    # --- keys ------------------------------------------------------------------------------

    @property
    def signing_key(self) -> SigningKey:
        """The key `mint` signs with: the first published one."""
        return self.published[0]

    def rotate(self, new_key: SigningKey, *, keep_old: bool = False) -> None:
        """Publish `new_key` and sign with it from now on; drop the old keys unless kept."""
        self.published = [new_key, *self.published] if keep_old else [new_key]

    # --- tokens ----------------------------------------------------------------------------

    def claims(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GitHub's example payload, issued now by this issuer for `audience`."""
        iat = int(self.clock())
        payload = copy.deepcopy(EXAMPLE["payload"])
        payload.update(
            iss=self.issuer,
            aud=self.audience,
            iat=iat,
            nbf=iat - NOT_BEFORE_SKEW,
            exp=iat + TOKEN_LIFETIME,
        )
        return _apply(payload, overrides)

    def header(
        self, overrides: Mapping[str, Any] | None = None, *, kid: str | None = None
    ) -> dict[str, Any]:
        header = copy.deepcopy(EXAMPLE["header"])
        header["kid"] = kid or self.signing_key.kid
        return _apply(header, overrides)

    def mint(
        self,
        claims_overrides: Mapping[str, Any] | None = None,
        header_overrides: Mapping[str, Any] | None = None,
        *,
        key: SigningKey | None = None,
    ) -> str:
        """An RS256 token; `key` signs (and names the kid) instead of the issuer's current key."""
        key = key or self.signing_key
        return compact_jws(
            self.header(header_overrides, kid=key.kid),
            self.claims(claims_overrides),
            rs256_signer(key.private_key),
        )

    # --- HTTP ------------------------------------------------------------------------------

    def jwks_json(self) -> str:
        """The JWKS this issuer serves, as JSON text (for a policy that verifies its tokens)."""
        return self._jwks_body().decode()

    def _jwks_body(self) -> bytes:
        keys = [k.public_jwk() for k in self.published] + self.extra_jwks
        return json.dumps({"keys": keys}).encode()

    async def _discovery(self, request: web.Request) -> web.Response:
        if self.down:
            self.served["down"] += 1
            return web.Response(status=503)
        self.served["discovery"] += 1
        document = {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "subject_types_supported": ["public", "pairwise"],
            "response_types_supported": ["id_token"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid"],
            **self.discovery_overrides,
        }
        return web.json_response(document)

    async def _jwks(self, request: web.Request) -> web.Response:
        if self.down:
            self.served["down"] += 1
            return web.Response(status=503)
        body = self._jwks_body()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        headers = {"ETag": etag, "Cache-Control": f"public, max-age={self.max_age}"}
        if request.headers.get("If-None-Match") == etag:
            self.served["jwks_not_modified"] += 1
            return web.Response(status=304, headers=headers)
        self.served["jwks"] += 1
        return web.Response(body=body, content_type="application/json", headers=headers)
