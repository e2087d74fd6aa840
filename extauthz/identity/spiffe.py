"""SPIFFE IDs (SPIFFE-ID.md): strict parsing into `SpiffeId`, and patterns to match them.

A SPIFFE ID is `spiffe://<trust domain><path>`. The parser is a character-level validator rather
than `urllib.parse`, which accepts (and silently normalises) much that the spec forbids: upper-case
schemes, ports, userinfo, percent-encoding, `.`/`..` segments, queries and fragments.
"""

from __future__ import annotations

from dataclasses import dataclass

from extauthz.identity.errors import IdentityConfigError, IdentityError, Reason
from extauthz.model import SpiffeId

SCHEME_PREFIX = "spiffe://"
MAX_SPIFFE_ID_LENGTH = 2048  # bytes; the spec's bound for the whole URI
MAX_TRUST_DOMAIN_LENGTH = 255

_TRUST_DOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_SEGMENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")

ANY_SEGMENT = "*"  # in a pattern: exactly one segment
ANY_REST = "**"  # as the last pattern segment: one or more further segments


def _trust_domain_problem(trust_domain: str) -> str | None:
    if not trust_domain:
        return "trust domain is empty"
    if len(trust_domain) > MAX_TRUST_DOMAIN_LENGTH:
        return f"trust domain is longer than {MAX_TRUST_DOMAIN_LENGTH} characters"
    if not _TRUST_DOMAIN_CHARS.issuperset(trust_domain):
        # Also what refuses ports (':'), userinfo ('@'), upper case and percent-encoding.
        return "trust domain may contain only a-z, 0-9, '.', '-' and '_'"
    return None


def _segment_problem(segment: str) -> str | None:
    if not segment:
        return "path has an empty segment"
    if segment in (".", ".."):
        return "path has a '.' or '..' segment"
    if not _SEGMENT_CHARS.issuperset(segment):
        # Also what refuses queries ('?'), fragments ('#') and percent-encoding ('%').
        return "path segments may contain only A-Z, a-z, 0-9, '.', '-' and '_'"
    return None


def _split(text: str) -> tuple[str, str]:
    """`spiffe://td/p/q` -> ("td", "/p/q"), with only the scheme and length checked."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPIFFE_ID_LENGTH:
        raise ValueError(f"longer than {MAX_SPIFFE_ID_LENGTH} bytes")
    if not text.startswith(SCHEME_PREFIX):
        raise ValueError("scheme must be 'spiffe://' (lower case)")
    rest = text[len(SCHEME_PREFIX) :]
    slash = rest.find("/")
    return (rest, "") if slash < 0 else (rest[:slash], rest[slash:])


def validate_trust_domain(trust_domain: str) -> str:
    """Return `trust_domain` if it is a valid trust domain name; else raise IdentityConfigError.

    For configuration (bundles, patterns); a caller's SPIFFE ID goes through `parse_spiffe_id`.
    """
    problem = _trust_domain_problem(trust_domain)
    if problem is not None:
        raise IdentityConfigError(f"invalid trust domain {trust_domain!r}: {problem}")
    return trust_domain


def parse_spiffe_id(text: str) -> SpiffeId:
    """Parse a caller-presented SPIFFE ID; raise IdentityError(malformed_spiffe_id) if invalid."""
    try:
        trust_domain, path = _split(text)
    except ValueError as error:
        raise IdentityError(Reason.MALFORMED_SPIFFE_ID, f"not a SPIFFE ID: {error}") from None
    problem = _trust_domain_problem(trust_domain)
    if problem is None and path:
        problem = next(filter(None, map(_segment_problem, path[1:].split("/"))), None)
    if problem is not None:
        raise IdentityError(Reason.MALFORMED_SPIFFE_ID, f"not a SPIFFE ID: {problem}")
    return SpiffeId(trust_domain=trust_domain, path=path)


@dataclass(frozen=True, slots=True)
class SpiffeIdPattern:
    """Which SPIFFE IDs a rule names: a trust domain and a path pattern.

    The path pattern is matched segment by segment: a literal segment matches itself, `*` matches
    exactly one segment, and a final `**` matches one or more further segments. So
    `/ns/*/sa/deployer` matches `/ns/prod/sa/deployer`, and `/ns/prod/**` matches
    `/ns/prod/sa/x` but not `/ns/prod` itself (name that one separately if it is meant). An empty
    path pattern matches only the trust domain's own ID. Partial globs (`deploy-*`) are refused:
    they are easy to write too broadly.
    """

    trust_domain: str
    path_pattern: str

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        if not self.path_pattern:
            return
        if not self.path_pattern.startswith("/"):
            raise IdentityConfigError(f"path pattern {self.path_pattern!r} must start with '/'")
        segments = self.path_pattern[1:].split("/")
        for index, segment in enumerate(segments):
            if segment == ANY_SEGMENT or (segment == ANY_REST and index == len(segments) - 1):
                continue
            problem = _segment_problem(segment)
            if problem is not None:
                raise IdentityConfigError(f"invalid path pattern {self.path_pattern!r}: {problem}")

    @classmethod
    def parse(cls, text: str) -> SpiffeIdPattern:
        """`spiffe://example.org/ns/*/sa/x` -> SpiffeIdPattern("example.org", "/ns/*/sa/x")."""
        try:
            trust_domain, path_pattern = _split(text)
        except ValueError as error:
            raise IdentityConfigError(f"invalid SPIFFE ID pattern {text!r}: {error}") from None
        return cls(trust_domain, path_pattern)

    def matches(self, spiffe_id: SpiffeId) -> bool:
        if spiffe_id.trust_domain != self.trust_domain:
            return False
        if not self.path_pattern or not spiffe_id.path:
            return self.path_pattern == spiffe_id.path
        wanted = self.path_pattern[1:].split("/")
        actual = spiffe_id.path[1:].split("/")
        if wanted[-1] == ANY_REST:
            wanted = wanted[:-1]
            if len(actual) <= len(wanted):
                return False
            actual = actual[: len(wanted)]
        elif len(actual) != len(wanted):
            return False
        return all(w in (ANY_SEGMENT, a) for w, a in zip(wanted, actual, strict=True))

    def __str__(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain}{self.path_pattern}"
