"""Tokens from any configured issuer, verified into one Identity with the same strictness.

Order of checks, cheapest and most hostile-input-facing first: size; shape (three base64url parts
of strict JSON); header (`alg` among the configured ones, no `crit`, a `kid`); the issuer the
claims name (`iss`; a JWT-SVID without a configured `iss` by its SPIFFE ID's trust domain), then
that issuer's `alg`, `typ` and audience, all before any key is fetched; the signature with that
issuer's key for `kid` (never a key the header carries: `jku`, `x5u`, `jwk`, `x5c` are never
read), whose type must fit `alg`; then time (validity, age, and a lifetime `exp - iat` no longer
than the issuer's tokens live); then the preset's claims and the configured required claims.

PyJWT reads the wall clock (`datetime.now`) and cannot take ours, so its exp/nbf/iat checks are
off and the same checks run here against the injected clock, with the same leeway semantics.

What the Identity holds: `claims`, every top-level string claim and the configured flat names of
nested ones (`kubernetes.io` -> `namespace`, `service_account`, ...), minus `email` unless
`email_verified` is true; `claim_lists`, every top-level array of strings but `aud` (`groups`);
`provenance`, the configured claims minted tokens carry; `subject`, as the preset builds it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self

import aiohttp
import jwt

from extauthz.identity._jws import UnverifiedToken, check_type, numeric_date, read_unverified
from extauthz.identity.errors import (
    IdentityError,
    MissingCredential,
    Reason,
    from_pyjwt,
    token_reference,
)
from extauthz.identity.issuers import (
    IssuerConfig,
    IssuerConfigError,
    JwksPath,
    JwksUri,
    check_issuers,
)
from extauthz.identity.jwks import JwksCache, JwksSettings
from extauthz.identity.keys import USE_JWT_SVID, USE_SIGNATURE, JwksFile, KeySource
from extauthz.identity.spiffe import parse_spiffe_id
from extauthz.model import Evidence, Identity, IdentityKind

Clock = Callable[[], float]
ALWAYS_REQUIRED = ("exp", "iat", "sub", "aud")
SPIFFE_PREFIX = "spiffe://"


def string_claims(claims: Mapping[str, Any]) -> dict[str, str]:
    """Every string-valued claim; JSON's lone surrogates (\\ud800) would break later encoders."""
    strings = {name: value for name, value in claims.items() if isinstance(value, str)}
    for name, value in strings.items():
        _require_unicode(name + value)
    return strings


def _require_unicode(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise IdentityError(Reason.INVALID_CLAIM, "a claim is not valid Unicode") from None


def _list_claims(claims: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    lists: dict[str, tuple[str, ...]] = {}
    for name, value in claims.items():
        if name != "aud" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            for item in value:
                _require_unicode(name + item)
            lists[name] = tuple(value)
    return lists


def _nested(claims: Mapping[str, Any], path: tuple[str, ...]) -> str | None:
    value: Any = claims
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) else None


def _email_verified(claims: Mapping[str, Any]) -> bool:
    # Some IdPs (Cognito) send the boolean as a string. `1 == True` in Python: compare exactly.
    verified = claims.get("email_verified")
    return verified is True or (isinstance(verified, str) and verified == "true")


class IssuerVerifier:
    """Verifies the tokens of one configured issuer (found for it by `JwtVerifier`)."""

    def __init__(self, config: IssuerConfig, keys: KeySource, *, clock: Clock = time.time) -> None:
        self.config = config
        self._keys = keys
        self._clock = clock

    async def verify(self, text: str, unverified: UnverifiedToken) -> Identity:
        config = self.config
        if len(text) > config.max_token_bytes:
            raise IdentityError(
                Reason.TOKEN_TOO_LARGE, f"token exceeds {config.max_token_bytes} bytes"
            )
        alg = unverified.header["alg"]  # a string: read_unverified checked it
        if alg not in config.algorithms:
            allowed = ", ".join(config.algorithms)
            raise IdentityError(
                Reason.ALG_NOT_ALLOWED, f"alg {alg!r} is not {allowed} for {config.label}"
            )
        check_type(unverified.header, config.preset.token_types)
        # Before any key fetch: a token for another service costs us nothing.
        self._check_audience(unverified.claims.get("aud"))
        key = await self._keys.verification_key(unverified.kid)
        if alg not in key.algorithms:
            raise IdentityError(
                Reason.ALG_NOT_ALLOWED,
                f"kid {unverified.kid[:64]!r} is a key for {', '.join(sorted(key.algorithms))}, "
                f"not {alg}",
            )
        claims = self._decode(text, key.key, alg)
        iat, expires_at = self._check_times(claims)
        config.preset.check(claims, config.trust_domain)
        return self._identity(text, claims, iat, expires_at)

    def _check_audience(self, audience: object) -> None:
        # One audience, ours: a list could smuggle in a second. GitHub sends a string; the
        # others may send a one-element list (Kubernetes always does).
        if isinstance(audience, list) and not self.config.preset.audience_string_only:
            audience = audience[0] if len(audience) == 1 else None
        if not isinstance(audience, str) or audience not in self.config.audiences:
            raise IdentityError(Reason.BAD_AUDIENCE, "aud is not one of ours")

    def _decode(self, text: str, key: Any, alg: str) -> dict[str, Any]:
        config = self.config
        required = [*ALWAYS_REQUIRED]
        if config.issuer is not None:
            required.append("iss")
        if config.preset.require_nbf:
            required.append("nbf")
        try:
            claims: dict[str, Any] = jwt.decode(
                text,
                key=key,
                algorithms=[alg],
                audience=sorted(config.audiences),
                issuer=config.issuer,
                leeway=config.leeway_seconds,
                options={
                    "require": required,
                    "verify_signature": True,
                    "verify_aud": True,
                    "verify_iss": config.issuer is not None,
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
        config = self.config
        now = self._clock()
        exp, iat = numeric_date(claims, "exp"), numeric_date(claims, "iat")
        nbf = numeric_date(claims, "nbf") if "nbf" in claims else iat
        leeway = config.leeway_seconds
        max_age, max_lifetime = config.max_token_age_seconds, config.max_lifetime_seconds
        if exp <= iat:
            raise IdentityError(Reason.INVALID_CLAIM, "exp is not after iat")
        if exp - iat > max_lifetime:
            # No honest issuer of this kind issues such a token: it is a misissued or forged
            # one, refused outright rather than for being old later.
            raise IdentityError(
                Reason.TOKEN_LIFETIME_TOO_LONG,
                f"token lives {exp - iat:.0f} s (exp - iat), over the {max_lifetime:.0f} s "
                "this issuer's tokens may live",
            )
        if exp <= now - leeway:
            raise IdentityError(Reason.TOKEN_EXPIRED, "token has expired")
        if nbf > now + leeway:
            raise IdentityError(Reason.TOKEN_NOT_YET_VALID, "token is not valid yet (nbf)")
        if iat > now + leeway:
            raise IdentityError(Reason.IAT_IN_FUTURE, "token was issued in the future (iat)")
        if now - iat > max_age + leeway:
            raise IdentityError(Reason.TOKEN_TOO_OLD, f"token is older than {max_age:.0f} s")
        return iat, exp

    def _identity(
        self, text: str, claims: Mapping[str, Any], iat: float, expires_at: float
    ) -> Identity:
        config = self.config
        flat = string_claims(claims)
        for name, path in config.claim_paths.items():
            value = _nested(claims, path)
            if value is None:
                flat.pop(name, None)  # the configured meaning, or nothing
            else:
                _require_unicode(value)
                flat[name] = value
        if "email" in flat and not _email_verified(claims):
            del flat["email"]  # an address the IdP did not verify names no one
        lists = _list_claims(claims)
        for name in config.required_claims:
            if name not in flat and name not in lists:
                raise IdentityError(Reason.MISSING_CLAIM, f"{name} is missing (required)")
        for name in config.subject_claims:
            if not flat.get(name):
                raise IdentityError(Reason.MISSING_CLAIM, f"{name} is missing (the subject)")
        provenance = {name: flat[name] for name in config.provenance if flat.get(name)}
        spiffe_id = None
        if config.preset.kind is IdentityKind.SPIFFE_JWT:
            spiffe_id = parse_spiffe_id(flat["sub"])
            provenance["spiffe_id"] = str(spiffe_id)
        return Identity(
            kind=config.preset.kind,
            subject=config.preset.subject(config.label, flat, config.subject_claims),
            issuer=config.label,
            credential_hash=hashlib.sha256(text.encode("ascii")).hexdigest(),
            # A token stops being acceptable at exp or at max age, whichever comes first; the
            # mint's TTL clamp and the token cache must not outlive either.
            expires_at=int(min(expires_at, iat + config.max_token_age_seconds)),
            evidence=Evidence("oidc_token", text.encode("ascii")),
            spiffe_id=spiffe_id,
            claims=flat,
            claim_lists=lists,
            provenance=provenance,
        )


class JwtVerifier:
    """Every configured issuer's tokens: finds the token's issuer and lets it verify."""

    def __init__(self, verifiers: Iterable[IssuerVerifier]) -> None:
        verifiers = tuple(verifiers)
        if not verifiers:
            raise IssuerConfigError("no token issuer is configured")
        check_issuers(v.config for v in verifiers)
        self._by_issuer = {v.config.issuer: v for v in verifiers if v.config.issuer is not None}
        self._by_trust_domain = {
            v.config.trust_domain: v
            for v in verifiers
            if v.config.issuer is None and v.config.trust_domain is not None
        }
        self._verifiers = verifiers
        self._algorithms = frozenset(a for v in verifiers for a in v.config.algorithms)
        self._types = frozenset(t for v in verifiers for t in v.config.preset.token_types)
        self._max_bytes = max(v.config.max_token_bytes for v in verifiers)

    @classmethod
    def from_configs(
        cls,
        configs: Iterable[IssuerConfig],
        *,
        session: aiohttp.ClientSession,
        cache: Any | None = None,
        jwks_settings: JwksSettings | None = None,
        clock: Clock = time.time,
    ) -> Self:
        """The usual wiring: a JwksCache per discovered issuer (one session, one cache backend),
        a JwksFile per issuer whose keys are a file."""
        settings = jwks_settings or JwksSettings()
        return cls(
            IssuerVerifier(config, key_source(config, session, cache, settings, clock), clock=clock)
            for config in configs
        )

    @property
    def issuers(self) -> frozenset[str]:
        return frozenset(v.config.label for v in self._verifiers)

    @property
    def configs(self) -> tuple[IssuerConfig, ...]:
        return tuple(v.config for v in self._verifiers)

    async def verify(self, token: str | bytes) -> Identity:
        """The Identity of a valid token; IdentityError (with its reason) for anything else."""
        if not token:
            raise MissingCredential("no bearer token")
        try:
            text = self._bounded_text(token)
            unverified = read_unverified(text, algorithms=self._algorithms, types=self._types)
            return await self._verifier_for(unverified).verify(text, unverified)
        except MissingCredential:
            raise
        except IdentityError as error:
            reference = token_reference(token) if isinstance(token, str | bytes) else "?"
            raise IdentityError(error.reason, f"token {reference}: {error.message}") from None

    def _verifier_for(self, unverified: UnverifiedToken) -> IssuerVerifier:
        issuer = unverified.claims.get("iss")
        found = self._by_issuer.get(issuer) if isinstance(issuer, str) else None
        if found is None and self._by_trust_domain:
            # JWT-SVID section 3: a validator finds the keys by the trust domain of `sub`.
            sub = unverified.claims.get("sub")
            if isinstance(sub, str) and sub.startswith(SPIFFE_PREFIX):
                domain = sub[len(SPIFFE_PREFIX) :].partition("/")[0]
                found = self._by_trust_domain.get(domain)
        if found is None:
            raise IdentityError(Reason.UNKNOWN_ISSUER, f"iss {str(issuer)[:80]!r} unknown")
        return found

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


def key_source(
    config: IssuerConfig,
    session: aiohttp.ClientSession,
    cache: Any | None,
    settings: JwksSettings,
    clock: Clock,
) -> KeySource:
    """Where `config`'s keys come from; every source applies the same cooldown."""
    uses = (USE_SIGNATURE, USE_JWT_SVID) if config.preset.name == "spiffe_jwt" else (USE_SIGNATURE,)
    keys = config.keys
    if isinstance(keys, JwksPath):
        return JwksFile(
            config.label,
            keys.path,
            algorithms=config.algorithms,
            uses=uses,
            cooldown_seconds=settings.fetch_cooldown_seconds,
            max_document_bytes=settings.max_document_bytes,
            max_keys=settings.max_keys,
            clock=clock,
        )
    if config.issuer is None:  # IssuerConfig refuses this; kept for the type checker
        raise IssuerConfigError("discovery needs an issuer", location=config.name)
    return JwksCache(
        config.issuer,
        session=session,
        cache=cache,
        settings=settings,
        clock=clock,
        algorithms=config.algorithms,
        uses=uses,
        jwks_uri=keys.url if isinstance(keys, JwksUri) else None,
    )
