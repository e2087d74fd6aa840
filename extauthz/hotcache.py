"""The hot path's cache: prebuilt OK responses by (credential, route), bounded and in memory."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.decision import Allow

RequestKey = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HotEntry:
    allow: Allow
    response: CheckResponse
    fresh_until: float


class HotCache:
    """Prebuilt OK responses by (credential, route): bounded, in memory, exact."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self._entries: OrderedDict[RequestKey, HotEntry] = OrderedDict()
        self._max = max_entries

    def get(self, key: RequestKey, now: float) -> HotEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.fresh_until <= now:
            del self._entries[key]
            return None
        return entry

    def put(self, key: RequestKey, entry: HotEntry) -> None:
        self._entries[key] = entry
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


def request_fingerprint(request: CheckRequest) -> RequestKey | None:
    """Credential and route of a request, as an exact key; None when it carries no credential.

    The strings themselves, not a digest of them: a dictionary compares them in C, faster than
    hashing a kilobyte of token, and a hit can never be another caller's entry.
    """
    attributes = request.attributes
    http = attributes.request.http
    headers = http.headers
    authorization = headers.get("authorization", "")
    certificate = attributes.source.certificate
    principal = attributes.source.principal
    xfcc = headers.get("x-forwarded-client-cert", "")
    if not (authorization or certificate or principal or xfcc):
        return None
    extensions = attributes.context_extensions
    return (
        authorization,
        certificate,
        principal,
        xfcc,
        http.host,
        http.method,
        http.path,
        *(f"{k}={extensions[k]}" for k in sorted(extensions)),
    )
