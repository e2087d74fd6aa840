"""The hot path's cache: serialized OK responses by (credential, route, what policy reads).

A key holds everything a decision depends on: the credential (bearer token, peer certificate and
principal, XFCC), the route (host, method, path, context_extensions), the headers policy can read
(`PolicyEngine.readable_headers`) and the request attributes it can read (addresses, scheme,
protocol, body: the fields of `RequestAttributes`); both are empty without Rego. A policy reload
clears the cache, and a decision made under the policy in force before a clear is never stored
after it.

An entry is slim (bench-scale measures its resident size): the response as the bytes Envoy will
receive, and the three strings a hit is checked against (the token's jti and subject for the
revocation lists, the identity's rate-limit key). Keys are SHA-256 digests of the fields above,
not the fields: a caller's token and certificate PEM are kilobytes, a digest is 32 bytes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.policy.rego_decision import KEYMINT_METADATA

RequestKey = bytes


@dataclass(frozen=True, slots=True)
class HotEntry:
    """A cached allow: `response` is a serialized CheckResponse (each hit parses its own copy,
    so no caller can change what later hits receive)."""

    response: bytes
    fresh_until: float
    jti: str
    subject: str
    rate_key: str


class HotCache:
    """Serialized OK responses by request key: bounded, in memory, exact."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self._entries: OrderedDict[RequestKey, HotEntry] = OrderedDict()
        self._max = max_entries
        self._generation = 0

    @property
    def generation(self) -> int:
        """Moves on every `clear`: read it before deciding, hand it to `put`."""
        return self._generation

    def get(self, key: RequestKey, now: float) -> HotEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.fresh_until <= now:
            del self._entries[key]
            return None
        return entry

    def put(self, key: RequestKey, entry: HotEntry, *, generation: int, now: float) -> bool:
        """Store `entry`, decided when `generation` was current; a decision that a `clear` has
        overtaken (a policy reload while it was being made) is dropped. True if stored.

        Entries that went stale by `now` are dropped from the oldest end first: a credential
        seen once (a CI job's token for one step) does not keep its entry until the bound
        pushes it out."""
        if generation != self._generation:
            return False
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._max or (
            self._entries and next(iter(self._entries.values())).fresh_until <= now
        ):
            self._entries.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()


def request_fingerprint(
    request: CheckRequest,
    readable_headers: tuple[tuple[str, str], ...] = (),
    readable_attributes: tuple[object, ...] = (),
) -> RequestKey | None:
    """Credential, route and what policy reads, as an exact key (`digest`); None when the
    request carries no credential."""
    attributes = request.attributes
    http = attributes.request.http
    headers = http.headers
    authorization = headers.get("authorization", "")
    source = attributes.source
    certificate = source.certificate
    principal = source.principal
    xfcc = headers.get("x-forwarded-client-cert", "")
    if not (authorization or certificate or principal or xfcc):
        return None
    extensions = attributes.context_extensions
    rest = (readable_headers, readable_attributes, tuple(sorted(extensions.items())))
    return digest(
        (authorization, certificate, principal, xfcc, http.host, http.method, http.path), rest
    )


def digest(strings: tuple[str, ...], rest: tuple[object, ...] = ()) -> bytes:
    """SHA-256 of `strings` and `rest`, encoded so that two different inputs never share one:
    the strings joined by NUL (none of them holds one: Envoy refuses NUL in headers and paths;
    one that does is encoded as below instead), then the `repr` of `rest` (a tuple's repr quotes
    and escapes every string in it). Two requests share a key only if every field is equal,
    short of a SHA-256 collision."""
    joined = "\x00".join(strings)
    if joined.count("\x00") != len(strings) - 1:
        # A field holds a NUL: its repr, which holds none (repr escapes it), so this form has
        # fewer raw NULs than the joined one and the two never meet.
        joined = repr(strings)
    text = f"{joined}\x00{rest!r}" if rest else joined
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def as_hit(response: CheckResponse) -> bytes:
    """An allow's response as later hits answer it: the same, but for keymint's metadata, which
    says `cache: hit` and names no request id (the one of the request that was decided is not
    theirs). A copy edited in place: building the response again costs ten times more."""
    stored = CheckResponse()
    stored.CopyFrom(response)
    fields = stored.dynamic_metadata.fields[KEYMINT_METADATA].struct_value.fields
    fields["cache"].string_value = "hit"
    if "request_id" in fields:
        del fields["request_id"]
    serialized: bytes = stored.SerializeToString()
    return serialized
