"""`x-forwarded-client-cert` (XFCC), Envoy's header for a client certificate seen by a proxy.

Format (Envoy docs, "HTTP header manipulation"): elements separated by `,`, one per proxy hop,
each appended by the proxy that terminated that hop's TLS; an element is `;`-separated `Key=Value`
pairs with keys By, Hash, Cert, Chain, Subject, URI, DNS (URI and DNS may repeat). A value may be
double-quoted; inside quotes `,` `;` `=` are literal and `\\"` is a quote. Cert and Chain are
URL-encoded PEM.

Which element we believe, and why the LAST one: the header is only as trustworthy as whoever
wrote it. We believe it only when our immediate peer is a configured trusted proxy, and that peer
speaks only for the hop it terminated itself: the element it appended, which Envoy appends at the
end. Earlier elements were written by hops further away that we cannot authenticate (a client can
send any XFCC it likes to the first proxy). For this to hold, the trusted proxy must append
(APPEND_FORWARD or SANITIZE_SET) and our own Envoy's listener for that proxy must use
FORWARD_ONLY, so that it does not append an element of its own after the proxy's.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from extauthz.identity.errors import IdentityError, Reason
from extauthz.identity.spiffe import SCHEME_PREFIX, SpiffeIdPattern, parse_spiffe_id
from extauthz.identity.x509 import X509Verifier
from extauthz.model import Identity

MAX_XFCC_LENGTH = 64 * 1024
MAX_ELEMENTS = 16
MAX_PAIRS_PER_ELEMENT = 32
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_SINGLE_KEYS = ("by", "hash", "cert", "chain", "subject")
_REPEATED_KEYS = ("uri", "dns")


def _malformed(message: str) -> IdentityError:
    return IdentityError(Reason.MALFORMED_XFCC, message)


def _pem_bytes(url_encoded: str) -> bytes:
    # PEM is ASCII; anything unencodable becomes U+FFFD and fails parsing, not encoding.
    return urllib.parse.unquote(url_encoded).encode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class XfccElement:
    """One hop's client certificate details. Cert and Chain stay URL-encoded, as sent."""

    by: str | None = None
    hash: str | None = None
    cert: str | None = None
    chain: str | None = None
    subject: str | None = None
    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()

    @property
    def cert_pem(self) -> bytes | None:
        return None if self.cert is None else _pem_bytes(self.cert)

    @property
    def chain_pem(self) -> bytes | None:
        return None if self.chain is None else _pem_bytes(self.chain)


class _Scanner:
    """A single left-to-right pass over the header; every loop consumes at least one character."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def key(self) -> str:
        start = self.pos
        while self.peek() in _KEY_CHARS:  # peek() is "" at the end, which is not a key char
            self.pos += 1
        if self.pos == start or self.peek() != "=":
            raise _malformed(f"expected Key= at offset {start}")
        self.pos += 1  # the '='
        return self.text[start : self.pos - 1].lower()

    def value(self) -> str:
        if self.peek() == '"':
            return self._quoted()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",;":
            if self.text[self.pos] == '"':
                raise _malformed(f"stray quote at offset {self.pos}")
            self.pos += 1
        return self.text[start : self.pos]

    def _quoted(self) -> str:
        self.pos += 1  # opening quote
        chars: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.text[self.pos + 1 : self.pos + 2] == '"':
                chars.append('"')
                self.pos += 2
            elif char == '"':
                self.pos += 1
                if not self.at_end() and self.peek() not in ",;":
                    raise _malformed(f"text after a closing quote at offset {self.pos}")
                return "".join(chars)
            else:
                # Any other backslash is literal: Envoy escapes only quotes.
                chars.append(char)
                self.pos += 1
        raise _malformed("unterminated quoted value")


def _element(pairs: list[tuple[str, str]]) -> XfccElement:
    single: dict[str, str] = {}
    repeated: dict[str, list[str]] = {key: [] for key in _REPEATED_KEYS}
    for key, value in pairs:
        if key in repeated:
            repeated[key].append(value)
        elif key in _SINGLE_KEYS:
            if key in single:
                raise _malformed(f"{key} appears twice in one element")
            single[key] = value
        # Unknown keys are skipped: Envoy may add keys in later versions.
    return XfccElement(
        by=single.get("by"),
        hash=single.get("hash"),
        cert=single.get("cert"),
        chain=single.get("chain"),
        subject=single.get("subject"),
        uris=tuple(repeated["uri"]),
        dns=tuple(repeated["dns"]),
    )


def parse_xfcc(header: str) -> list[XfccElement]:
    """Parse an XFCC header value into its elements, first (farthest hop) to last (nearest).

    Raises IdentityError(malformed_xfcc) on anything else; never anything else, never unbounded.
    """
    if len(header) > MAX_XFCC_LENGTH:
        raise _malformed("header is too large")
    scanner = _Scanner(header)
    elements: list[XfccElement] = []
    pairs: list[tuple[str, str]] = []
    while True:
        pairs.append((scanner.key(), scanner.value()))
        if len(pairs) > MAX_PAIRS_PER_ELEMENT:
            raise _malformed("too many pairs in one element")
        separator = scanner.peek()
        scanner.pos += 1
        if separator == ";":
            continue
        elements.append(_element(pairs))
        pairs = []
        if len(elements) > MAX_ELEMENTS:
            raise _malformed("too many elements")
        if separator == "":
            return elements
        # ',' between elements; tolerate the optional whitespace other proxies put after it.
        while scanner.peek() in (" ", "\t"):
            scanner.pos += 1


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The immediate peers whose XFCC we believe: SPIFFE ID patterns, or exact other principals."""

    patterns: tuple[SpiffeIdPattern, ...] = ()
    principals: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        entries = list(entries)
        return cls(
            patterns=tuple(
                SpiffeIdPattern.parse(e) for e in entries if e.startswith(SCHEME_PREFIX)
            ),
            principals=frozenset(e for e in entries if not e.startswith(SCHEME_PREFIX)),
        )

    def trusts(self, peer_principal: str | None) -> bool:
        if not peer_principal:
            return False
        if peer_principal in self.principals:
            return True
        if not peer_principal.startswith(SCHEME_PREFIX) or not self.patterns:
            return False
        try:
            spiffe_id = parse_spiffe_id(peer_principal)
        except IdentityError:
            return False
        return any(pattern.matches(spiffe_id) for pattern in self.patterns)


class XfccIdentifier:
    """Identify the client behind a trusted proxy from the XFCC element that proxy appended.

    When the immediate peer is a trusted proxy, that element IS the caller: the proxy's own
    certificate and principal are the proxy's, and never stand for anyone behind it. The element
    must carry `Cert` (Envoy: `set_current_client_cert_details: {cert: true}`), which is verified
    like a directly presented certificate (chain from `Chain`); `Hash` and `URI`, when present,
    must agree with it. An element with only a `URI`, or no header at all, is refused: a bare
    name is the proxy's word, and the signers' guards can verify only a certificate.
    """

    def __init__(self, *, trusted_proxies: TrustedProxies, certificates: X509Verifier) -> None:
        self._trusted_proxies = trusted_proxies
        self._certificates = certificates

    def trusts(self, peer_principal: str | None) -> bool:
        """Whether the immediate peer is a trusted proxy, whose callers are in its XFCC."""
        return self._trusted_proxies.trusts(peer_principal)

    def identify(self, header: str | None, peer_principal: str | None) -> Identity | None:
        """The caller behind a trusted proxy; None when the peer is not a trusted proxy (the
        caller logs it). A trusted proxy that forwards no certificate is an IdentityError."""
        if not self._trusted_proxies.trusts(peer_principal):
            return None
        return self.forwarded_identity(header, peer_principal)

    def forwarded_certificate(self, header: str | None, proxy: str | None) -> str:
        """The `Cert` (URL-encoded PEM, as sent) of the trusted proxy's element, for binding
        checks (`cnf`); "" when there is none, which such a check then fails."""
        if not header or not self._trusted_proxies.trusts(proxy):
            return ""
        try:
            return parse_xfcc(header)[-1].cert or ""
        except IdentityError:
            return ""

    def forwarded_identity(self, header: str | None, proxy: str | None) -> Identity:
        """The caller that the trusted proxy `proxy` forwards in `header`."""
        if not self._trusted_proxies.trusts(proxy):
            raise IdentityError(Reason.UNTRUSTED_PROXY, f"{proxy!r} is not a trusted proxy")
        if not header:
            raise IdentityError(
                Reason.CERTIFICATE_NOT_FORWARDED,
                f"the trusted proxy {proxy} forwarded no x-forwarded-client-cert; its "
                "own certificate never stands for its callers",
            )
        element = parse_xfcc(header)[-1]
        if element.cert is None:
            raise IdentityError(
                Reason.CERTIFICATE_NOT_FORWARDED,
                "the trusted proxy's XFCC element has no Cert: it must forward the client "
                "certificate (Envoy: forward_client_cert_details with "
                "set_current_client_cert_details: {cert: true}), since signers verify the "
                "certificate, not a URI",
            )
        identity = self._certificates.verify_pem(element.cert_pem or b"", element.chain_pem or b"")
        # credential_hash is the leaf's DER SHA-256, which is what Envoy puts in Hash.
        if element.hash is not None and element.hash.lower() != identity.credential_hash:
            raise IdentityError(Reason.XFCC_MISMATCH, "XFCC Hash does not match its Cert")
        spiffe_id = identity.spiffe_id
        if spiffe_id is not None and element.uris and element.uris != (str(spiffe_id),):
            raise IdentityError(Reason.XFCC_MISMATCH, "XFCC URI does not match its Cert")
        return identity
