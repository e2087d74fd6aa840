"""The outcome of one Check, as data: an Allow with its token, or a Deny with status and reason."""

from __future__ import annotations

from dataclasses import dataclass, field

from extauthz.model import Grant, Identity
from extauthz.policy.rego_decision import PolicyResponse
from extauthz.server.tokencache import MintedToken


@dataclass(frozen=True, slots=True)
class Allow:
    """An allow: the minted token and, from a Rego decision, what else goes with the request
    to the upstream and with the response to the caller."""

    identity: Identity
    grant: Grant
    token: MintedToken
    cached: bool
    response: PolicyResponse | None = None


@dataclass(frozen=True, slots=True)
class Deny:
    """A denial: `status` is the HTTP status Envoy returns, `reason` a stable snake_case code.

    `detail` is for the caller (response body, WWW-Authenticate); `internal`, when set, is the
    operator's detail (signers, addresses, their failures), for the log and the audit record
    only, never for a response. `response` is a Rego denial's own body, headers and metadata.
    """

    status: int
    reason: str
    detail: str
    identity: Identity | None = None
    retry_after: int | None = None
    headers: tuple[tuple[str, str], ...] = field(default=())
    internal: str | None = None
    response: PolicyResponse | None = None

    @classmethod
    def unauthenticated(cls, reason: str, detail: str) -> Deny:
        return cls(401, reason, detail)

    @classmethod
    def forbidden(cls, reason: str, detail: str, identity: Identity | None = None) -> Deny:
        return cls(403, reason, detail, identity)

    @classmethod
    def rate_limited(cls, detail: str, identity: Identity, retry_after: int) -> Deny:
        return cls(429, "rate_limited", detail, identity, retry_after)

    @classmethod
    def unavailable(
        cls,
        reason: str,
        detail: str,
        identity: Identity | None = None,
        *,
        internal: str | None = None,
    ) -> Deny:
        return cls(503, reason, detail, identity, retry_after=1, internal=internal)


Decision = Allow | Deny
