"""Verified identities by credential: a credential seen before, on a route not seen before.

The hot cache (extauthz.server.hotcache) answers a credential on a route it has seen; a caller
walking REST ids (`/v1/releases/8812`, `/v1/releases/8813`) presents one credential on a new path
every time. Verifying that credential again (its signature, its issuer's keys, its certificate
chain) would give the same identity: this cache keeps it, by the exact credential fields Envoy sent
(bearer token, peer certificate and principal, XFCC: everything `Identifier.identify` reads), until
the identity's own expiry (a token's `exp`, capped by the issuer's maximum token age; a
certificate's notAfter) and at most `max_seconds`. What follows identification still runs on every
miss: revocations, rate limits, policy, and a mint unless the minter holds a token for it.

Like the hot cache, an entry outlives the withdrawal of the issuer key that verified it, for at
most its lifetime; unlike it, it holds no decision, so a policy reload does not clear it.
"""

from __future__ import annotations

from collections import OrderedDict

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from extauthz.model import Identity
from extauthz.server.hotcache import digest

CredentialKey = bytes


class IdentityCache:
    def __init__(self, max_entries: int = 10_000, max_seconds: float = 300.0) -> None:
        self._entries: OrderedDict[CredentialKey, tuple[Identity, float]] = OrderedDict()
        self._max = max_entries
        self._max_seconds = max_seconds

    def get(self, key: CredentialKey, now: float) -> Identity | None:
        found = self._entries.get(key)
        if found is None:
            return None
        identity, until = found
        if until <= now:
            del self._entries[key]
            return None
        return identity

    def put(self, key: CredentialKey, identity: Identity, now: float) -> None:
        until = min(float(identity.expires_at), now + self._max_seconds)
        if until <= now:
            return
        self._entries[key] = (identity, until)
        self._entries.move_to_end(key)
        # Oldest first: expired entries go whenever one is stored, so a credential seen once (a
        # CI step's token) does not stay until the bound pushes it out (the soak found it).
        while len(self._entries) > self._max or next(iter(self._entries.values()))[1] <= now:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


def credential_key(request: CheckRequest) -> CredentialKey | None:
    """What identification reads, as a digest (`extauthz.server.hotcache.digest`); None when the
    request carries no credential."""
    attributes = request.attributes
    headers = attributes.request.http.headers
    fields = (
        headers.get("authorization", ""),
        attributes.source.certificate,
        attributes.source.principal,
        headers.get("x-forwarded-client-cert", ""),
    )
    if not any(fields):
        return None
    return digest(fields)
