"""GitHub Actions OIDC tokens: verified into an Identity of kind GITHUB_ACTIONS.

Order of checks, cheapest and most hostile-input-facing first: size; shape (three base64url
parts of strict JSON); header (`alg` exactly RS256, `typ` JWT if present, no `crit`, a `kid`);
`iss` among the configured issuers and `aud` among ours, all before any key is fetched; then the
signature with the issuer's JWKS key (PyJWT, RS256 only); then time (validity, age, and a
lifetime `exp - iat` no longer than the issuer's tokens live) and GitHub's claims.

The Identity's subject is `github_subject`: the issuer and the numeric ids policy binds, never
the upstream `sub`, whose names can be recycled; the names stay in `claims` for provenance.

`jku`, `x5u`, `jwk` and `x5c` are never read: the key is the configured issuer's JWKS entry for
`kid`, so a token carrying its own key verifies only if the issuer signed it.

PyJWT reads the wall clock (`datetime.now`) and cannot take ours, so its exp/nbf/iat checks are
off and the same checks run here against the injected clock, with the same leeway semantics.
"""

from __future__ import annotations

import hashlib
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from extauthz.identity._jws import numeric_date, read_unverified
from extauthz.identity.errors import (
    IdentityConfigError,
    IdentityError,
    MissingCredential,
    Reason,
    from_pyjwt,
    token_reference,
)
from extauthz.identity.jwks import JwksCache, JwksSettings
from extauthz.model import Evidence, Identity, IdentityKind

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
ALGORITHM = "RS256"
REQUIRED_CLAIMS = ("exp", "iat", "nbf", "iss", "aud", "sub")
ID_CLAIMS = ("repository_id", "repository_owner_id")  # ids are never recycled; names can be


Clock = Callable[[], float]


def ghes_issuer(host: str) -> str:
    """The issuer of a GitHub Enterprise Server instance."""
    return f"https://{host}/_services/token"


def enterprise_issuer(slug: str) -> str:
    """The issuer of a github.com enterprise that configured a custom issuer."""
    return f"{GITHUB_ISSUER}/{slug}"


class SigningKeySource(Protocol):
    """Where an issuer's keys come from (a JwksCache in production)."""

    @property
    def issuer(self) -> str: ...

    async def signing_key(self, kid: str) -> RSAPublicKey: ...


def github_subject(issuer: str, repository_owner_id: str, repository_id: str) -> str:
    """The subject of a GitHub Actions caller: the numeric ids policy binds, under its issuer.

    `{issuer}#repository_owner_id={owner id}&repository_id={repository id}`. Ids are never
    recycled, unlike the names in the upstream `sub` (`repo:ORG/REPO:...`). github.com, each GHES
    host and each enterprise issuer number their repositories separately, so the issuer is part
    of the subject; an issuer has no `#` (checked at construction), so the subject is unambiguous.
    """
    return f"{issuer}#repository_owner_id={repository_owner_id}&repository_id={repository_id}"


def _audience_default_of(audience: str, ghes_hosts: frozenset[str]) -> str | None:
    """The GitHub (or GHES) host whose default `aud` this is, if it is one."""
    try:
        host = (urllib.parse.urlsplit(audience).hostname or "").lower()
    except ValueError:
        return None
    if host == "github.com" or host.endswith(".github.com") or host in ghes_hosts:
        return host
    return None


def _string_claims(claims: Mapping[str, Any]) -> dict[str, str]:
    """Every string-valued claim; JSON's lone surrogates (\\ud800) would break later encoders."""
    strings = {name: value for name, value in claims.items() if isinstance(value, str)}
    for name, value in strings.items():
        try:
            (name + value).encode("utf-8")
        except UnicodeEncodeError:
            raise IdentityError(Reason.INVALID_CLAIM, "a claim is not valid Unicode") from None
    return strings


class GitHubOidcVerifier:
    """Verifies GitHub Actions OIDC tokens for a set of issuers and our own audiences."""

    def __init__(
        self,
        *,
        key_sources: Iterable[SigningKeySource],
        audiences: Iterable[str],
        max_token_age_seconds: float = 600.0,
        max_lifetime_seconds: float = 3600.0,
        leeway_seconds: float = 30.0,
        max_token_bytes: int = 8 * 1024,
        clock: Clock = time.time,
    ) -> None:
        self._key_sources = {source.issuer: source for source in key_sources}
        if not self._key_sources:
            raise IdentityConfigError("GitHub OIDC needs at least one issuer")
        for issuer in sorted(self._key_sources):
            if "#" in issuer or "?" in issuer:
                # OpenID Discovery: an issuer has no query or fragment; subjects rely on it.
                raise IdentityConfigError(f"issuer {issuer!r} has a query or a fragment")
        self._audiences = frozenset(audiences)
        if not self._audiences or not all(self._audiences):
            raise IdentityConfigError("GitHub OIDC needs a non-empty list of non-empty audiences")
        ghes_hosts = frozenset(
            (urllib.parse.urlsplit(issuer).hostname or "").lower()
            for issuer in self._key_sources
            if issuer.endswith("/_services/token")
        )
        for audience in sorted(self._audiences):
            host = _audience_default_of(audience, ghes_hosts)
            if host is not None:
                # Every workflow of the owner gets that audience by default: it names no service.
                raise IdentityConfigError(
                    f"audience {audience!r} is GitHub's default (https://{host}/<owner>); "
                    "configure a custom audience and request it with ?audience="
                )
        if (
            max_token_age_seconds <= 0
            or max_lifetime_seconds <= 0
            or leeway_seconds < 0
            or max_token_bytes <= 0
        ):
            raise IdentityConfigError("token age, lifetime, leeway and size must be positive")
        self._max_age = max_token_age_seconds
        self._max_lifetime = max_lifetime_seconds
        self._leeway = leeway_seconds
        self._max_bytes = max_token_bytes
        self._clock = clock

    @classmethod
    def for_issuers(
        cls,
        issuers: Iterable[str],
        *,
        audiences: Iterable[str],
        session: aiohttp.ClientSession,
        cache: Any | None = None,
        jwks_settings: JwksSettings | None = None,
        max_token_age_seconds: float = 600.0,
        max_lifetime_seconds: float = 3600.0,
        leeway_seconds: float = 30.0,
        max_token_bytes: int = 8 * 1024,
        clock: Clock = time.time,
    ) -> GitHubOidcVerifier:
        """The usual wiring: one JwksCache per issuer, sharing a session and a cache backend."""
        sources = [
            JwksCache(i, session=session, cache=cache, settings=jwks_settings, clock=clock)
            for i in issuers
        ]
        return cls(
            key_sources=sources,
            audiences=audiences,
            max_token_age_seconds=max_token_age_seconds,
            max_lifetime_seconds=max_lifetime_seconds,
            leeway_seconds=leeway_seconds,
            max_token_bytes=max_token_bytes,
            clock=clock,
        )

    @property
    def issuers(self) -> frozenset[str]:
        return frozenset(self._key_sources)

    async def verify(self, token: str | bytes) -> Identity:
        """The Identity of a valid token; IdentityError (with its reason) for anything else."""
        if not token:
            raise MissingCredential("no bearer token")
        try:
            return await self._verify(token)
        except MissingCredential:
            raise
        except IdentityError as error:
            reference = token_reference(token) if isinstance(token, str | bytes) else "?"
            raise IdentityError(error.reason, f"token {reference}: {error.message}") from None

    async def _verify(self, token: str | bytes) -> Identity:
        text = self._bounded_text(token)
        unverified = read_unverified(text, algorithm=ALGORITHM)
        # Both before any key fetch: a token for another issuer or service costs us nothing.
        source = self._key_source(unverified.claims.get("iss"))
        self._check_audience(unverified.claims.get("aud"))
        key = await source.signing_key(unverified.kid)
        claims = self._decode(text, key, source.issuer)
        iat, expires_at = self._check_times(claims)
        self._check_github_claims(claims)
        string_claims = _string_claims(claims)
        return Identity(
            kind=IdentityKind.GITHUB_ACTIONS,
            subject=github_subject(
                source.issuer, claims["repository_owner_id"], claims["repository_id"]
            ),
            issuer=source.issuer,
            credential_hash=hashlib.sha256(text.encode("ascii")).hexdigest(),
            # A token stops being acceptable at exp or at max age, whichever comes first; the
            # mint's TTL clamp and the token cache must not outlive either.
            expires_at=int(min(expires_at, iat + self._max_age)),
            evidence=Evidence("oidc_token", text.encode("ascii")),
            claims=string_claims,
        )

    def _bounded_text(self, token: object) -> str:
        if not isinstance(token, str | bytes):
            raise IdentityError(Reason.MALFORMED_TOKEN, "token is not text")
        if len(token) > self._max_bytes:
            raise IdentityError(Reason.TOKEN_TOO_LARGE, f"token exceeds {self._max_bytes} bytes")
        if isinstance(token, str):
            if not token.isascii():
                raise IdentityError(Reason.MALFORMED_TOKEN, "token is not ASCII")
            return token
        try:
            return token.decode("ascii")
        except UnicodeDecodeError:
            raise IdentityError(Reason.MALFORMED_TOKEN, "token is not ASCII") from None

    def _key_source(self, issuer: object) -> SigningKeySource:
        source = self._key_sources.get(issuer) if isinstance(issuer, str) else None
        if source is None:
            raise IdentityError(Reason.UNKNOWN_ISSUER, f"iss {str(issuer)[:80]!r} unknown")
        return source

    def _check_audience(self, audience: object) -> None:
        # GitHub issues exactly one audience, as a string; a list could smuggle in a second.
        if not isinstance(audience, str) or audience not in self._audiences:
            raise IdentityError(Reason.BAD_AUDIENCE, "aud is not one of ours")

    def _decode(self, text: str, key: RSAPublicKey, issuer: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                text,
                key=key,
                algorithms=[ALGORITHM],
                audience=sorted(self._audiences),
                issuer=issuer,
                leeway=self._leeway,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_signature": True,
                    "verify_aud": True,
                    "verify_iss": True,
                    "verify_exp": False,  # checked in _check_times, against our clock
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as error:
            raise from_pyjwt(error) from None
        except (ValueError, TypeError, OverflowError, RecursionError):
            # Defence in depth: input PyJWT did not anticipate must still be a refusal.
            raise IdentityError(Reason.MALFORMED_TOKEN, "token could not be decoded") from None
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> tuple[float, float]:
        """(iat, exp) of a token that is valid now, within leeway and max age."""
        now = self._clock()
        exp, nbf, iat = (numeric_date(claims, name) for name in ("exp", "nbf", "iat"))
        leeway = self._leeway
        if exp <= iat:
            raise IdentityError(Reason.INVALID_CLAIM, "exp is not after iat")
        if exp - iat > self._max_lifetime:
            # No honest issuer of this kind issues such a token (GitHub's live 300 s): it is a
            # misissued or forged one, refused outright rather than for being old later.
            raise IdentityError(
                Reason.TOKEN_LIFETIME_TOO_LONG,
                f"token lives {exp - iat:.0f} s (exp - iat), over the {self._max_lifetime:.0f} s "
                "this issuer's tokens may live",
            )
        if exp <= now - leeway:
            raise IdentityError(Reason.TOKEN_EXPIRED, "token has expired")
        if nbf > now + leeway:
            raise IdentityError(Reason.TOKEN_NOT_YET_VALID, "token is not valid yet (nbf)")
        if iat > now + leeway:
            raise IdentityError(Reason.IAT_IN_FUTURE, "token was issued in the future (iat)")
        if now - iat > self._max_age + leeway:
            raise IdentityError(Reason.TOKEN_TOO_OLD, f"token is older than {self._max_age:.0f} s")
        return iat, exp

    @staticmethod
    def _check_github_claims(claims: Mapping[str, Any]) -> None:
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise IdentityError(Reason.MISSING_CLAIM, "sub is missing or empty")
        for name in ID_CLAIMS:
            value = claims.get(name)
            if not isinstance(value, str):
                raise IdentityError(Reason.MISSING_CLAIM, f"{name} missing or not a string")
            if not (value.isascii() and value.isdigit()):
                raise IdentityError(Reason.INVALID_CLAIM, f"{name} is not a decimal id")
