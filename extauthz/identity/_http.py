"""The one place the identity layer talks HTTP: bounded GETs of small JSON documents."""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass

import aiohttp

from extauthz.identity.errors import IdentityConfigError

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|$)", re.IGNORECASE)


class FetchError(Exception):
    """A document could not be fetched or was not acceptable (the message is safe to log)."""


@dataclass(frozen=True, slots=True)
class JsonResponse:
    document: object  # parsed JSON; None when not_modified
    not_modified: bool
    etag: str | None
    max_age: float | None  # from Cache-Control; 0 for no-store/no-cache; None if absent


def require_url(url: str, *, allow_http: bool) -> str:
    """An issuer URL as OIDC requires it: https (http only for tests), a host, no query,
    fragment or userinfo, no trailing slash (we append `/.well-known/...` to it verbatim)."""
    parts = urllib.parse.urlsplit(url)
    schemes = ("https", "http") if allow_http else ("https",)
    if (
        parts.scheme not in schemes
        or not parts.hostname
        or parts.query
        or parts.fragment
        or parts.username is not None
        or url.endswith("/")
    ):
        raise IdentityConfigError(f"issuer {url!r} must be an https URL without a trailing slash")
    return url


def same_origin(url: str, issuer: str) -> bool:
    """True if `url` is on the issuer's scheme, host and port (GitHub and GHES serve both there)."""
    try:
        a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(issuer)
        return (a.scheme, a.hostname, a.port, a.username) == (b.scheme, b.hostname, b.port, None)
    except ValueError:  # e.g. a port that is not a number
        return False


def cache_max_age(cache_control: str | None) -> float | None:
    if cache_control is None:
        return None
    if _NO_CACHE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    if response.content_length is not None and response.content_length > max_bytes:
        raise FetchError(f"{response.url} is larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in response.content.iter_any():  # decompressed: also caps a gzip bomb
        body += chunk
        if len(body) > max_bytes:
            raise FetchError(f"{response.url} is larger than {max_bytes} bytes")
    return bytes(body)


async def fetch_json(
    url: str,
    *,
    session: aiohttp.ClientSession,
    timeout: float,
    max_bytes: int,
    etag: str | None = None,
) -> JsonResponse:
    """GET `url` (no redirects: an issuer that moves must update its discovery document)."""
    headers = {"Accept": "application/json"}
    if etag is not None:
        headers["If-None-Match"] = etag
    try:
        async with session.get(
            url,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            max_age = cache_max_age(response.headers.get("Cache-Control"))
            if response.status == 304 and etag is not None:
                return JsonResponse(None, True, etag, max_age)
            if response.status != 200:
                raise FetchError(f"{url} answered HTTP {response.status}")
            body = await _read_capped(response, max_bytes)
            etag_header = response.headers.get("ETag")
    except (TimeoutError, aiohttp.ClientError, ValueError) as error:
        raise FetchError(f"{url}: {type(error).__name__}") from None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise FetchError(f"{url} did not return JSON") from None
    return JsonResponse(document, False, etag_header, max_age)
