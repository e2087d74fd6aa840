"""Presets: what each kind of issuer's tokens look like, and the rules that keep them strict.

A preset gives an issuer's defaults (algorithms, age and lifetime bounds, provenance claims, the
claims nested objects are flattened into) and its fixed rules: which claims must be there and in
which form, and how the subject is built. Configuration may narrow a preset, never loosen its
fixed rules. Each preset was written against tokens in its issuer's documented shape.

| preset           | kind           | subject                                                    |
|------------------|----------------|------------------------------------------------------------|
| `github_actions` | GITHUB_ACTIONS | `<issuer>#repository_owner_id=<id>&repository_id=<id>`     |
| `gitlab_ci`      | GITLAB_CI      | `<issuer>#namespace_id=<id>&project_id=<id>`               |
| `kubernetes`     | KUBERNETES     | `<issuer>#sub=system:serviceaccount:<namespace>:<name>`    |
| `spiffe_jwt`     | SPIFFE_JWT     | the SPIFFE ID in `sub`                                     |
| `oidc`           | OIDC           | `<issuer>#sub=<sub>` (or the configured `subject_claims`)  |

Ids never recycle; names can (a GitHub or GitLab project renamed or deleted, then registered
again by someone else), so the CI presets' subjects are numeric ids and policy must pin them.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from extauthz.identity.errors import IdentityError, Reason
from extauthz.identity.spiffe import parse_spiffe_id
from extauthz.model import IdentityKind

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
# Values a subject's claim may show unescaped: never `&`, `=`, `#` or `%`, which delimit it.
_SUBJECT_SAFE = ":/@!$'()*+,;~"

# GitHub claims carried into minted tokens: ids bind, names inform.
GITHUB_PROVENANCE = (
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "ref",
    "environment",
    "job_workflow_ref",
    "run_id",
)
GITLAB_PROVENANCE = (
    "project_id",
    "project_path",
    "namespace_id",
    "namespace_path",
    "ref",
    "ref_type",
    "ref_protected",
    "environment",
    "pipeline_source",
    "pipeline_id",
    "job_id",
)
# The `kubernetes.io` claim of a projected service-account token, flattened for policy.
KUBERNETES_CLAIMS: Mapping[str, tuple[str, ...]] = {
    "namespace": ("kubernetes.io", "namespace"),
    "service_account": ("kubernetes.io", "serviceaccount", "name"),
    "service_account_uid": ("kubernetes.io", "serviceaccount", "uid"),
    "pod": ("kubernetes.io", "pod", "name"),
    "pod_uid": ("kubernetes.io", "pod", "uid"),
    "node": ("kubernetes.io", "node", "name"),
}

Subject = Callable[[str, Mapping[str, str], Sequence[str]], str]
ClaimCheck = Callable[[Mapping[str, Any], str | None], None]


@dataclass(frozen=True, slots=True)
class Preset:
    """One kind of issuer (see the module docstring)."""

    name: str
    kind: IdentityKind
    algorithms: tuple[str, ...]  # the default; configuration may narrow it
    max_token_age_seconds: int
    max_lifetime_seconds: int
    provenance: tuple[str, ...]
    subject: Subject  # (issuer label, claims, subject claims) -> the Identity's subject
    check: ClaimCheck  # (verified claims, trust domain) -> None, or IdentityError
    claim_paths: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    token_types: frozenset[str] = frozenset({"JWT"})  # `typ` values accepted (or none)
    require_nbf: bool = False
    audience_string_only: bool = False  # GitHub sends one audience, as a string
    subject_claims: tuple[str, ...] = ()  # for `claims_subject`; empty when the subject is fixed
    fixed_algorithms: bool = False  # the issuer signs with one algorithm: no configuration


def claims_subject(issuer: str, claims: Mapping[str, str], names: Sequence[str]) -> str:
    """`<issuer>#<name>=<value>&...`, values percent-encoded where they could be read as a
    delimiter, so two different claim sets never give the same subject. An issuer has no `#`
    (checked in configuration)."""
    parts = [f"{name}={urllib.parse.quote(claims[name], safe=_SUBJECT_SAFE)}" for name in names]
    return f"{issuer}#{'&'.join(parts)}"


def github_subject(issuer: str, repository_owner_id: str, repository_id: str) -> str:
    """The subject of a GitHub Actions caller: the numeric ids policy binds, under its issuer.

    `{issuer}#repository_owner_id={owner id}&repository_id={repository id}`. Ids are never
    recycled, unlike the names in the upstream `sub` (`repo:ORG/REPO:...`). github.com, each GHES
    host and each enterprise issuer number their repositories separately, so the issuer is part
    of the subject; an issuer has no `#` (checked at construction), so the subject is unambiguous.
    """
    return f"{issuer}#repository_owner_id={repository_owner_id}&repository_id={repository_id}"


def _github_subject(issuer: str, claims: Mapping[str, str], names: Sequence[str]) -> str:
    return github_subject(issuer, claims["repository_owner_id"], claims["repository_id"])


def _gitlab_subject(issuer: str, claims: Mapping[str, str], names: Sequence[str]) -> str:
    return claims_subject(issuer, claims, ("namespace_id", "project_id"))


def _spiffe_subject(issuer: str, claims: Mapping[str, str], names: Sequence[str]) -> str:
    return claims["sub"]


def require_sub(claims: Mapping[str, Any]) -> str:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise IdentityError(Reason.MISSING_CLAIM, "sub is missing or empty")
    return sub


def require_decimal_ids(claims: Mapping[str, Any], names: Sequence[str]) -> None:
    for name in names:
        value = claims.get(name)
        if not isinstance(value, str):
            raise IdentityError(Reason.MISSING_CLAIM, f"{name} missing or not a string")
        if not (value.isascii() and value.isdigit()):
            raise IdentityError(Reason.INVALID_CLAIM, f"{name} is not a decimal id")


def _check_github(claims: Mapping[str, Any], trust_domain: str | None) -> None:
    require_sub(claims)
    require_decimal_ids(claims, ("repository_id", "repository_owner_id"))


def _check_gitlab(claims: Mapping[str, Any], trust_domain: str | None) -> None:
    require_sub(claims)
    require_decimal_ids(claims, ("project_id", "namespace_id"))


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise IdentityError(Reason.MISSING_CLAIM, f"{what} is missing or not an object")
    return value


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise IdentityError(Reason.MISSING_CLAIM, f"{what} is missing or empty")
    return value


def _check_kubernetes(claims: Mapping[str, Any], trust_domain: str | None) -> None:
    """A projected token names its namespace and service account twice: in `sub` and in the
    `kubernetes.io` claim. Both must agree; a token where they differ is not the API server's."""
    sub = require_sub(claims)
    kubernetes = _object(claims.get("kubernetes.io"), "kubernetes.io")
    namespace = _name(kubernetes.get("namespace"), "kubernetes.io.namespace")
    account = _object(kubernetes.get("serviceaccount"), "kubernetes.io.serviceaccount")
    name = _name(account.get("name"), "kubernetes.io.serviceaccount.name")
    _name(account.get("uid"), "kubernetes.io.serviceaccount.uid")
    if sub != f"system:serviceaccount:{namespace}:{name}":
        raise IdentityError(
            Reason.INVALID_CLAIM, "sub does not name the service account in kubernetes.io"
        )
    for bound in ("pod", "node", "secret"):
        if bound in kubernetes:  # optional: present when the token is bound to the object
            _name(_object(kubernetes[bound], f"kubernetes.io.{bound}").get("name"), bound)


def _check_spiffe(claims: Mapping[str, Any], trust_domain: str | None) -> None:
    spiffe_id = parse_spiffe_id(require_sub(claims))
    if spiffe_id.trust_domain != trust_domain:
        raise IdentityError(
            Reason.WRONG_TRUST_DOMAIN,
            f"sub is in trust domain {spiffe_id.trust_domain!r}, this issuer's is {trust_domain!r}",
        )
    if not spiffe_id.path:
        raise IdentityError(Reason.MALFORMED_SPIFFE_ID, "a JWT-SVID names a workload, not a domain")


def _check_oidc(claims: Mapping[str, Any], trust_domain: str | None) -> None:
    require_sub(claims)


PRESETS: Mapping[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="github_actions",
            kind=IdentityKind.GITHUB_ACTIONS,
            algorithms=("RS256",),
            # GitHub's tokens live 300 s; one published sample 21600 s.
            max_token_age_seconds=600,
            max_lifetime_seconds=3600,
            provenance=GITHUB_PROVENANCE,
            subject=_github_subject,
            check=_check_github,
            require_nbf=True,
            audience_string_only=True,
            fixed_algorithms=True,
        ),
        Preset(
            name="gitlab_ci",
            kind=IdentityKind.GITLAB_CI,
            algorithms=("RS256",),
            # An id_token lives for the job's timeout (1 h by default) plus GitLab's 5 min, and
            # is issued when the job starts, so it may be used as late as that.
            max_token_age_seconds=3900,
            max_lifetime_seconds=3900,
            provenance=GITLAB_PROVENANCE,
            subject=_gitlab_subject,
            check=_check_gitlab,
            require_nbf=True,
            fixed_algorithms=True,
        ),
        Preset(
            name="kubernetes",
            kind=IdentityKind.KUBERNETES,
            algorithms=("RS256",),  # ES256 for clusters whose service-account key is EC
            # The kubelet renews a projected token at 80% of its life (1 h by default).
            max_token_age_seconds=3600,
            max_lifetime_seconds=7200,
            provenance=("namespace", "service_account", "pod"),
            subject=claims_subject,
            check=_check_kubernetes,
            claim_paths=KUBERNETES_CLAIMS,
            require_nbf=True,
            subject_claims=("sub",),
        ),
        Preset(
            name="spiffe_jwt",
            kind=IdentityKind.SPIFFE_JWT,
            algorithms=("ES256", "RS256"),  # SPIRE signs with ec-p256 unless told rsa-2048
            # SPIRE's JWT-SVIDs live 5 min by default; agents renew at half-life.
            max_token_age_seconds=1800,
            max_lifetime_seconds=3600,
            provenance=(),  # spiffe_id, added for every SPIFFE identity
            subject=_spiffe_subject,
            check=_check_spiffe,
            token_types=frozenset({"JWT", "JOSE"}),  # JWT-SVID section 2.2
        ),
        Preset(
            name="oidc",
            kind=IdentityKind.OIDC,
            algorithms=("RS256",),
            # ID tokens (Google, Okta, Entra ID) live an hour; `extauthz login` exchanges one
            # the moment the IdP issues it.
            max_token_age_seconds=900,
            max_lifetime_seconds=86400,
            provenance=("email",),
            subject=claims_subject,
            check=_check_oidc,
            subject_claims=("sub",),
        ),
    )
}
