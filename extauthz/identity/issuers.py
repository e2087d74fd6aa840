"""Which token issuers the gateway accepts: `IssuerConfig`, and the file that lists them.

`KEYMINT_ISSUERS_FILE` names a JSON file beside the policy, read and checked once at start; any
fault names the file, the JSON path and what is wrong, and stops the gateway:

    {"version": 1,
     "issuers": {
       "<name>": {"preset": "kubernetes", "issuer": "https://...", "audiences": ["..."],
                  "jwks_file": "cluster-jwks.json", ...}}}

Per issuer: `preset` (github_actions, gitlab_ci, kubernetes, spiffe_jwt, oidc); `issuer` (the
`iss` its tokens carry; a spiffe_jwt issuer may instead be found by `trust_domain`); `audiences`;
keys from discovery (the default), `jwks_uri` (an operator-vouched URL) or `jwks_file` (relative
to this file); `algorithms` (among RS256, PS256, ES256, ES384, EdDSA); `max_token_age_seconds`
and `max_lifetime_seconds`; `subject_claims` (oidc, kubernetes); `provenance`; `required_claims`;
`claims` (flat names for nested claims, as JSON Pointers); `trust_domain` (spiffe_jwt);
`max_token_bytes`; `description`. Unknown keys are errors, so a typo cannot loosen anything.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from extauthz.identity._http import require_url
from extauthz.identity.errors import IdentityConfigError
from extauthz.identity.keys import ALLOWED_ALGORITHMS
from extauthz.identity.presets import PRESETS, Preset
from extauthz.identity.spiffe import validate_trust_domain

FILE_VERSION = 1
MAX_SECONDS = 31 * 86400
MAX_TOKEN_BYTES = 64 * 1024
DEFAULT_TOKEN_BYTES = 8 * 1024
# Claims a minted token sets itself; provenance may not name them.
REGISTERED_CLAIMS = frozenset({"iss", "sub", "aud", "scope", "iat", "nbf", "exp", "jti", "cnf"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_CLAIM = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_POINTER = re.compile(r"(/[^/]+)+")


class IssuerConfigError(IdentityConfigError):
    """An issuer configuration that is invalid or unsafe: names the file and JSON path."""

    def __init__(self, message: str, *, source: str = "", location: str = "") -> None:
        self.message = message
        self.source = source
        self.location = location
        super().__init__(": ".join(part for part in (source, location, message) if part))


@dataclass(frozen=True, slots=True)
class Discovery:
    """Keys from the `jwks_uri` of the issuer's discovery document, on the issuer's origin."""


@dataclass(frozen=True, slots=True)
class JwksUri:
    """Keys from a URL the operator vouches for (no discovery)."""

    url: str


@dataclass(frozen=True, slots=True)
class JwksPath:
    """Keys from a JWKS file (a cluster's `/openid/v1/jwks`, a SPIFFE trust bundle)."""

    path: Path


KeysFrom = Discovery | JwksUri | JwksPath


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """One accepted issuer, validated at construction (IssuerConfigError names the fault)."""

    name: str
    preset: Preset
    issuer: str | None
    audiences: frozenset[str]
    algorithms: tuple[str, ...]
    max_token_age_seconds: int
    max_lifetime_seconds: int
    keys: KeysFrom = field(default_factory=Discovery)
    subject_claims: tuple[str, ...] = ()
    provenance: tuple[str, ...] = ()
    required_claims: tuple[str, ...] = ()
    claim_paths: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    trust_domain: str | None = None
    max_token_bytes: int = DEFAULT_TOKEN_BYTES
    leeway_seconds: float = 30.0

    @classmethod
    def for_preset(
        cls,
        preset: str,
        *,
        name: str | None = None,
        issuer: str | None,
        audiences: Iterable[str],
        **overrides: object,
    ) -> IssuerConfig:
        """An issuer with its preset's defaults; `overrides` are IssuerConfig fields."""
        chosen = PRESETS.get(preset)
        if chosen is None:
            raise IssuerConfigError(f"unknown preset {preset!r} (one of {', '.join(PRESETS)})")
        fields: dict[str, object] = {
            "name": name or issuer or preset,
            "preset": chosen,
            "issuer": issuer,
            "audiences": frozenset(audiences),
            "algorithms": chosen.algorithms,
            "max_token_age_seconds": chosen.max_token_age_seconds,
            "max_lifetime_seconds": chosen.max_lifetime_seconds,
            "subject_claims": chosen.subject_claims,
            "provenance": chosen.provenance,
            "claim_paths": dict(chosen.claim_paths),
            **overrides,
        }
        return cls(**fields)  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        """The issuer URL, or `spiffe://<trust domain>` for a JWT-SVID issuer without one."""
        return self.issuer if self.issuer is not None else f"spiffe://{self.trust_domain}"

    def __post_init__(self) -> None:
        preset = self.preset.name
        if self.issuer is None:
            if preset != "spiffe_jwt":
                _fail("issuer", "is required")
            if not isinstance(self.keys, JwksPath):
                _fail(
                    "jwks_file",
                    "(a trust bundle) is required for a trust domain without an issuer",
                )
        elif "#" in self.issuer or "?" in self.issuer:
            # OpenID Discovery: an issuer has no query or fragment; subjects rely on it.
            _fail("issuer", f"{self.issuer!r} has a query or a fragment")
        if (self.trust_domain is None) == (preset == "spiffe_jwt"):
            _fail("trust_domain", "is required for spiffe_jwt and only for it")
        if self.trust_domain is not None:
            try:
                validate_trust_domain(self.trust_domain)
            except IdentityConfigError as exc:
                _fail("trust_domain", str(exc))
        if not self.audiences or not all(self.audiences):
            _fail("audiences", "needs at least one non-empty audience")
        if preset == "github_actions":
            _refuse_github_default_audiences(self.issuer, self.audiences)
        self._check_algorithms()
        for what, seconds in (
            ("max_token_age_seconds", self.max_token_age_seconds),
            ("max_lifetime_seconds", self.max_lifetime_seconds),
        ):
            if not 0 < seconds <= MAX_SECONDS:
                _fail(what, f"must be between 1 and {MAX_SECONDS}")
        if not 0 < self.max_token_bytes <= MAX_TOKEN_BYTES or self.leeway_seconds < 0:
            _fail("max_token_bytes", f"must be between 1 and {MAX_TOKEN_BYTES}")
        if self.subject_claims != self.preset.subject_claims and not self.preset.subject_claims:
            _fail("subject_claims", f"the {preset} preset's subject is fixed")
        if self.preset.subject_claims and not self.subject_claims:
            _fail("subject_claims", "names no claim")
        for what, names in (
            ("subject_claims", self.subject_claims),
            ("provenance", self.provenance),
            ("required_claims", self.required_claims),
            ("claims", tuple(self.claim_paths)),
        ):
            for claim in names:
                if not _CLAIM.fullmatch(claim):
                    _fail(what, f"{claim!r} is not a claim name ([A-Za-z_][A-Za-z0-9_]*)")
        for claim in self.provenance:
            if claim in REGISTERED_CLAIMS:
                _fail("provenance", f"{claim!r} is set by keymint itself")

    def _check_algorithms(self) -> None:
        if not self.algorithms or len(set(self.algorithms)) != len(self.algorithms):
            _fail("algorithms", "must be a non-empty list without repeats")
        for alg in self.algorithms:
            if alg not in ALLOWED_ALGORITHMS:
                _fail("algorithms", f"{alg!r} is not one of {', '.join(ALLOWED_ALGORITHMS)}")
        if self.preset.fixed_algorithms and self.algorithms != self.preset.algorithms:
            signs = ", ".join(self.preset.algorithms)
            _fail("algorithms", f"this issuer signs with {signs} only")


def _fail(location: str, message: str) -> NoReturn:
    raise IssuerConfigError(message, location=location)


def _audience_default_of(audience: str, ghes_host: str | None) -> str | None:
    """The GitHub (or GHES) host whose default `aud` this is, if it is one."""
    try:
        host = (urllib.parse.urlsplit(audience).hostname or "").lower()
    except ValueError:
        return None
    if host == "github.com" or host.endswith(".github.com") or host == ghes_host:
        return host
    return None


def ghes_host(issuer: str | None) -> str | None:
    if issuer is None or not issuer.endswith("/_services/token"):
        return None
    return (urllib.parse.urlsplit(issuer).hostname or "").lower()


def _refuse_github_default_audiences(issuer: str | None, audiences: Iterable[str]) -> None:
    for audience in sorted(audiences):
        host = _audience_default_of(audience, ghes_host(issuer))
        if host is not None:
            # Every workflow of the owner gets that audience by default: it names no service.
            _fail(
                "audiences",
                f"audience {audience!r} is GitHub's default (https://{host}/<owner>); configure "
                "a custom audience and request it with ?audience=",
            )


def check_issuers(configs: Iterable[IssuerConfig]) -> tuple[IssuerConfig, ...]:
    """Several issuers together: no issuer URL or trust domain twice, and no GitHub default
    audience accepted from any GitHub issuer (a GHES host's own default included)."""
    configs = tuple(configs)
    seen: dict[str, str] = {}
    for config in configs:
        key = config.issuer or f"spiffe://{config.trust_domain}"
        if key in seen:
            raise IssuerConfigError(
                f"{key} is configured twice (also as {seen[key]!r})", location=config.name
            )
        seen[key] = config.name
    github = [c for c in configs if c.preset.name == "github_actions"]
    for config in github:
        for other in github:
            try:
                _refuse_github_default_audiences(other.issuer, config.audiences)
            except IssuerConfigError as exc:
                raise IssuerConfigError(exc.message, location=config.name) from None
    return configs


# --- the file --------------------------------------------------------------------------------

_ENTRY_KEYS = (
    "preset",
    "issuer",
    "audiences",
    "jwks_file",
    "jwks_uri",
    "algorithms",
    "max_token_age_seconds",
    "max_lifetime_seconds",
    "subject_claims",
    "provenance",
    "required_claims",
    "claims",
    "trust_domain",
    "max_token_bytes",
    "description",
)


def load_issuers_file(
    path: str | os.PathLike[str], *, allow_http: bool = False
) -> tuple[IssuerConfig, ...]:
    """Every issuer in the file, checked; IssuerConfigError names the file and JSON path."""
    source = os.fspath(path)
    try:
        content = Path(source).read_bytes()
    except OSError as exc:
        raise IssuerConfigError(f"cannot read: {exc.strerror}", source=source) from None
    try:
        document = json.loads(content.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IssuerConfigError(f"not JSON: {str(exc)[:200]}", source=source) from None
    try:
        return parse_issuers(document, base=Path(source).parent, allow_http=allow_http)
    except IssuerConfigError as exc:
        raise IssuerConfigError(exc.message, source=source, location=exc.location) from None


def parse_issuers(
    document: object, *, base: Path, allow_http: bool = False
) -> tuple[IssuerConfig, ...]:
    top = _fields(document, "", required=("issuers",), optional=("version", "description"))
    if "version" in top and top["version"] != FILE_VERSION:
        _fail("version", f"this gateway reads version {FILE_VERSION}")
    issuers = top["issuers"]
    if not isinstance(issuers, dict) or not issuers:
        _fail("issuers", "expected an object naming at least one issuer")
    configs = []
    for name, entry in issuers.items():
        where = f"issuers.{name}"
        if not _NAME.fullmatch(name):
            _fail(where, "an issuer name is letters, digits and _ . : -")
        try:
            configs.append(_entry(name, entry, where, base, allow_http))
        except IssuerConfigError as exc:
            location = f"{where}.{exc.location}" if exc.location else where
            raise IssuerConfigError(exc.message, location=location) from None
    try:
        return check_issuers(configs)
    except IssuerConfigError as exc:
        raise IssuerConfigError(exc.message, location=f"issuers.{exc.location}") from None


def _entry(name: str, entry: object, where: str, base: Path, allow_http: bool) -> IssuerConfig:
    fields = _fields(entry, "", required=("preset", "audiences"), optional=_ENTRY_KEYS)
    preset = _string(fields["preset"], "preset")
    issuer = None
    if "issuer" in fields:
        issuer = _string(fields["issuer"], "issuer")
        try:
            require_url(issuer, allow_http=allow_http)
        except IdentityConfigError:
            _fail("issuer", f"{issuer!r} must be an https URL without a trailing slash")
    overrides: dict[str, object] = {}
    given = [key for key in ("jwks_file", "jwks_uri") if key in fields]
    if len(given) > 1:
        _fail("jwks_uri", "give jwks_file or jwks_uri, not both")
    if "jwks_file" in fields:
        overrides["keys"] = JwksPath(base / _string(fields["jwks_file"], "jwks_file"))
    if "jwks_uri" in fields:
        uri = _string(fields["jwks_uri"], "jwks_uri")
        try:
            require_url(uri, allow_http=allow_http)
        except IdentityConfigError:
            _fail("jwks_uri", f"{uri!r} must be an https URL")
        overrides["keys"] = JwksUri(uri)
    for key in ("algorithms", "subject_claims", "provenance", "required_claims"):
        if key in fields:
            overrides[key] = tuple(_strings(fields[key], key, allow_empty=key != "algorithms"))
    for key in ("max_token_age_seconds", "max_lifetime_seconds", "max_token_bytes"):
        if key in fields:
            overrides[key] = _integer(fields[key], key)
    if "claims" in fields:
        overrides["claim_paths"] = {**_preset_paths(preset), **_pointers(fields["claims"])}
    if "trust_domain" in fields:
        overrides["trust_domain"] = _string(fields["trust_domain"], "trust_domain")
    if "description" in fields:
        _string(fields["description"], "description")
    return IssuerConfig.for_preset(
        preset,
        name=name,
        issuer=issuer,
        audiences=_strings(fields["audiences"], "audiences"),
        **overrides,
    )


def _preset_paths(preset: str) -> Mapping[str, tuple[str, ...]]:
    chosen = PRESETS.get(preset)
    return chosen.claim_paths if chosen is not None else {}


def _pointers(value: object) -> dict[str, tuple[str, ...]]:
    """`{"team": "/ext/team"}`: RFC 6901 pointers to nested string claims."""
    if not isinstance(value, dict):
        _fail("claims", "expected an object of claim name to JSON Pointer")
    paths = {}
    for name, pointer in value.items():
        if not isinstance(pointer, str) or not _POINTER.fullmatch(pointer):
            _fail(f"claims.{name}", "expected a JSON Pointer such as /kubernetes.io/namespace")
        parts = pointer[1:].split("/")
        paths[name] = tuple(p.replace("~1", "/").replace("~0", "~") for p in parts)
    return paths


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise ValueError(f"key {key!r} given twice")
    return dict(pairs)


def _fields(
    value: object, where: str, *, required: Iterable[str], optional: Iterable[str]
) -> dict[str, object]:
    if not isinstance(value, dict):
        _fail(where, "expected an object")
    required = tuple(required)
    known = sorted({*required, *optional})
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"expected {', '.join(known)}"
            _fail(key, f"unknown key ({hint})")
    for key in required:
        if key not in value:
            _fail(where, f"missing required key {key!r}")
    return dict(value)


def _string(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(where, "expected a non-empty string")
    return value


def _strings(value: object, where: str, *, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list) or (not value and not allow_empty):
        _fail(where, "expected a non-empty array of strings")
    items = [_string(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if len(set(items)) != len(items):
        _fail(where, "lists a value twice")
    return items


def _integer(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(where, "expected an integer")
    return value
