"""The hot path's cache: prebuilt OK responses by (credential, route), bounded and in memory."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.decision import Allow


@dataclass(frozen=True, slots=True)
class HotEntry:
    allow: Allow
    response: CheckResponse
    fresh_until: float


class HotCache:
    """Prebuilt OK responses by (credential, route): bounded, in memory, exact."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self._entries: OrderedDict[bytes, HotEntry] = OrderedDict()
        self._max = max_entries

    def get(self, key: bytes, now: float) -> HotEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.fresh_until <= now:
            del self._entries[key]
            return None
        return entry

    def put(self, key: bytes, entry: HotEntry) -> None:
        self._entries[key] = entry
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


def request_fingerprint(request: CheckRequest) -> bytes | None:
    """Credential and route of a request, hashed; None when it carries no credential."""
    attributes = request.attributes
    http = attributes.request.http
    headers = http.headers
    credential = (
        headers.get("authorization", ""),
        attributes.source.certificate,
        attributes.source.principal,
        headers.get("x-forwarded-client-cert", ""),
    )
    if not any(credential):
        return None
    digest = hashlib.sha256()
    for part in (*credential, http.host, http.method, http.path):
        digest.update(part.encode())
        digest.update(b"\x00")
    for key in sorted(attributes.context_extensions):
        digest.update(f"{key}={attributes.context_extensions[key]}\x00".encode())
    return digest.digest()
