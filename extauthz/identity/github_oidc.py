"""GitHub Actions OIDC tokens: the `github_actions` preset of `jwt_verifier`, kept as strict as
GitHub's own verifier always was here.

- `alg` exactly RS256 (the preset's algorithms cannot be configured), `typ` JWT if present;
- `aud` one string among ours, never an array, and never GitHub's default audience
  (`https://github.com/<owner>`, or a GHES host's), refused at configuration;
- `nbf` required as well as `exp`, `iat`, `iss`, `aud`, `sub`;
- `repository_id` and `repository_owner_id` decimal strings, and the subject built from them
  (`github_subject`): ids are never recycled, unlike the names in GitHub's own `sub`.

github.com, GHES (`ghes_issuer`) and enterprise issuers (`enterprise_issuer`) may be configured
side by side; each is one issuer with its own keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Self

import aiohttp

from extauthz.identity.issuers import IssuerConfig, IssuerConfigError, check_issuers
from extauthz.identity.jwks import JwksSettings
from extauthz.identity.jwt_verifier import JwtVerifier
from extauthz.identity.presets import GITHUB_ISSUER, github_subject

__all__ = [
    "GITHUB_ISSUER",
    "GitHubOidcVerifier",
    "enterprise_issuer",
    "ghes_issuer",
    "github_configs",
    "github_subject",
]

Clock = Callable[[], float]


def ghes_issuer(host: str) -> str:
    """The issuer of a GitHub Enterprise Server instance."""
    return f"https://{host}/_services/token"


def enterprise_issuer(slug: str) -> str:
    """The issuer of a github.com enterprise that configured a custom issuer."""
    return f"{GITHUB_ISSUER}/{slug}"


def github_configs(
    issuers: Iterable[str],
    *,
    audiences: Iterable[str],
    max_token_age_seconds: int = 600,
    max_lifetime_seconds: int = 3600,
    leeway_seconds: float = 30.0,
    max_token_bytes: int = 8 * 1024,
) -> tuple[IssuerConfig, ...]:
    """One `github_actions` issuer per URL, sharing audiences and bounds (the settings of
    KEYMINT_OIDC_ISSUERS and KEYMINT_OIDC_AUDIENCES)."""
    audiences = frozenset(audiences)
    configs = tuple(
        IssuerConfig.for_preset(
            "github_actions",
            issuer=issuer,
            audiences=audiences,
            max_token_age_seconds=max_token_age_seconds,
            max_lifetime_seconds=max_lifetime_seconds,
            leeway_seconds=leeway_seconds,
            max_token_bytes=max_token_bytes,
        )
        for issuer in issuers
    )
    if not configs:
        raise IssuerConfigError("GitHub OIDC needs at least one issuer")
    return check_issuers(configs)


class GitHubOidcVerifier(JwtVerifier):
    """A JwtVerifier of GitHub issuers only."""

    @classmethod
    def for_issuers(
        cls,
        issuers: Iterable[str],
        *,
        audiences: Iterable[str],
        session: aiohttp.ClientSession,
        cache: Any | None = None,
        jwks_settings: JwksSettings | None = None,
        max_token_age_seconds: int = 600,
        max_lifetime_seconds: int = 3600,
        leeway_seconds: float = 30.0,
        max_token_bytes: int = 8 * 1024,
        clock: Clock = time.time,
    ) -> Self:
        """The usual wiring: one JwksCache per issuer, sharing a session and a cache backend."""
        configs = github_configs(
            issuers,
            audiences=audiences,
            max_token_age_seconds=max_token_age_seconds,
            max_lifetime_seconds=max_lifetime_seconds,
            leeway_seconds=leeway_seconds,
            max_token_bytes=max_token_bytes,
        )
        return cls.from_configs(
            configs, session=session, cache=cache, jwks_settings=jwks_settings, clock=clock
        )
