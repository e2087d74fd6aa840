"""x-forwarded-client-cert: Envoy's format, malformed input, and whom we believe."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extauthz.identity import (
    IdentityError,
    Reason,
    TrustBundle,
    TrustedProxies,
    X509Verifier,
    XfccElement,
    XfccIdentifier,
    parse_xfcc,
)
from extauthz.identity.xfcc import MAX_ELEMENTS, MAX_PAIRS_PER_ELEMENT, MAX_XFCC_LENGTH
from extauthz.model import IdentityKind
from tests.helpers import ManualClock
from tests.helpers.certs import VALID_AT, CertificateAuthority, IssuedCertificate

HASH_1 = "468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688"
HASH_2 = "9ba61d6425303443c0748a02dd8de688468ed33be74eee6556d90c0149c1309e"
SUBJECT = "/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client"
INGRESS = "spiffe://example.org/ns/edge/sa/ingress"
DEPLOYER = "spiffe://example.org/ns/prod/sa/deployer"


# --- parsing: Envoy's documented examples ---------------------------------------------------


def test_envoy_example_uri_only() -> None:
    header = f'By=http://frontend.lyft.com;Hash={HASH_1};Subject="{SUBJECT}";URI=http://testclient.lyft.com'
    assert parse_xfcc(header) == [
        XfccElement(
            by="http://frontend.lyft.com",
            hash=HASH_1,
            subject=SUBJECT,
            uris=("http://testclient.lyft.com",),
        )
    ]


def test_envoy_example_two_hops() -> None:
    header = (
        f"By=http://frontend.lyft.com;Hash={HASH_1};URI=http://testclient.lyft.com,"
        f"By=http://backend.lyft.com;Hash={HASH_2};URI=http://frontend.lyft.com"
    )
    first, last = parse_xfcc(header)
    assert first.uris == ("http://testclient.lyft.com",)
    assert last == XfccElement(
        by="http://backend.lyft.com", hash=HASH_2, uris=("http://frontend.lyft.com",)
    )


def test_envoy_example_repeated_dns() -> None:
    header = (
        f'By=http://frontend.lyft.com;Hash={HASH_1};Subject="{SUBJECT}";'
        "URI=http://testclient.lyft.com;DNS=lyft.com;DNS=www.lyft.com"
    )
    (element,) = parse_xfcc(header)
    assert element.dns == ("lyft.com", "www.lyft.com")
    assert element.subject == SUBJECT


def test_spiffe_example_two_hops() -> None:
    header = (
        f"By=spiffe://lyft.com/frontend;Hash={HASH_1};URI=spiffe://lyft.com/testclient,"
        f'By=spiffe://lyft.com/backend;Hash={HASH_2};Subject="{SUBJECT}";'
        "URI=spiffe://lyft.com/frontend"
    )
    elements = parse_xfcc(header)
    assert [e.by for e in elements] == ["spiffe://lyft.com/frontend", "spiffe://lyft.com/backend"]
    assert elements[-1].uris == ("spiffe://lyft.com/frontend",)
    assert elements[-1].subject == SUBJECT


def test_quoted_values_keep_separators_and_escaped_quotes() -> None:
    header = r'Subject="CN=a\"b, O=x;y=z";URI=spiffe://t/a,By="spiffe://t/b"'
    first, second = parse_xfcc(header)
    assert first.subject == 'CN=a"b, O=x;y=z'
    assert first.uris == ("spiffe://t/a",)
    assert second.by == "spiffe://t/b"


def test_other_backslashes_are_literal() -> None:
    (element,) = parse_xfcc(r'Subject="C:\dir\"x"')
    assert element.subject == r'C:\dir"x'


def test_keys_are_case_insensitive_and_unknown_keys_skipped() -> None:
    (element,) = parse_xfcc("by=spiffe://t/p;HASH=abc;Future=1;uri=spiffe://t/c")
    assert element == XfccElement(by="spiffe://t/p", hash="abc", uris=("spiffe://t/c",))


def test_whitespace_after_element_comma_is_tolerated() -> None:
    assert len(parse_xfcc("By=a, By=b")) == 2


def test_cert_and_chain_are_url_decoded_on_demand() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    (element,) = parse_xfcc(f"Cert={urllib.parse.quote(pem, safe='')}")
    assert element.cert_pem == pem.encode()
    assert element.chain_pem is None


# --- parsing: malformed input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "",
        "By",
        "=value",
        "By=a;",
        "By=a,",
        ",By=a",
        "By=a;;Hash=b",
        "By=a,,By=b",
        'Subject="unterminated',
        'Subject="quoted"trailing',
        'By=a"b',
        "By=a;By=b",  # a single-valued key twice
        "Hash=a;Hash=b",
        "B y=a",
        "Bÿ=a",
        ";".join(["DNS=x"] * (MAX_PAIRS_PER_ELEMENT + 1)),
        ",".join(["By=x"] * (MAX_ELEMENTS + 1)),
        "Subject=" + "a" * MAX_XFCC_LENGTH,
    ],
)
def test_malformed_headers(header: str) -> None:
    with pytest.raises(IdentityError) as caught:
        parse_xfcc(header)
    assert caught.value.reason is Reason.MALFORMED_XFCC


@given(st.text(max_size=400))
def test_arbitrary_text_parses_or_is_refused_cleanly(header: str) -> None:
    try:
        parse_xfcc(header)
    except IdentityError as error:
        reason = error.reason
    else:
        return
    assert reason is Reason.MALFORMED_XFCC


values = st.text(st.characters(codec="utf-8", exclude_characters="\\"), max_size=20)


def _quote(value: str) -> str:
    return '"' + value.replace('"', '\\"') + '"'


@given(st.lists(st.tuples(values, st.lists(values, max_size=3)), min_size=1, max_size=4))
def test_what_envoy_writes_parses_back(elements: Sequence[tuple[str, list[str]]]) -> None:
    header = ",".join(
        ";".join([f"Subject={_quote(subject)}", *(f"DNS={_quote(d)}" for d in dns)])
        for subject, dns in elements
    )
    assert parse_xfcc(header) == [XfccElement(subject=s, dns=tuple(d)) for s, d in elements]


# --- believing it ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root() -> CertificateAuthority:
    return CertificateAuthority.root("example.org")


@pytest.fixture(scope="module")
def svid(root: CertificateAuthority) -> IssuedCertificate:
    return root.intermediate().issue_svid(DEPLOYER)


def certificates(root: CertificateAuthority) -> X509Verifier:
    return X509Verifier(
        spiffe_bundles=[TrustBundle("example.org", (root.certificate,))],
        clock=ManualClock(VALID_AT.timestamp()),
    )


def identifier(root: CertificateAuthority) -> XfccIdentifier:
    return XfccIdentifier(
        trusted_proxies=TrustedProxies.parse([INGRESS, "legacy-proxy.example.org"]),
        certificates=certificates(root),
    )


def element_for(
    svid: IssuedCertificate, *, hash_hex: str | None = None, uri: str | None = None
) -> str:
    cert = urllib.parse.quote(svid.pem.decode(), safe="")
    chain = urllib.parse.quote(svid.chain_pem.decode(), safe="")
    return (
        f'By={INGRESS};Hash={hash_hex or svid.der_sha256.hex()};Cert="{cert}";'
        f'Chain="{chain}";Subject="/CN=workload";URI={uri or DEPLOYER}'
    )


def test_trusted_proxy_is_believed(root: CertificateAuthority, svid: IssuedCertificate) -> None:
    identity = identifier(root).identify(element_for(svid), INGRESS)
    assert identity is not None
    assert identity.kind is IdentityKind.SPIFFE
    assert identity.subject == DEPLOYER
    assert identity.certificate_sha256 == svid.der_sha256


def test_exact_principal_and_pattern_proxies(
    root: CertificateAuthority, svid: IssuedCertificate
) -> None:
    proxies = TrustedProxies.parse(
        ["spiffe://example.org/ns/edge/sa/*", "legacy-proxy.example.org"]
    )
    xfcc = XfccIdentifier(trusted_proxies=proxies, certificates=certificates(root))
    assert xfcc.identify(element_for(svid), "spiffe://example.org/ns/edge/sa/ingress-2")
    assert xfcc.identify(element_for(svid), "legacy-proxy.example.org")
    assert xfcc.identify(element_for(svid), "spiffe://example.org/ns/prod/sa/ingress") is None


@pytest.mark.parametrize(
    "peer",
    [
        None,
        "",
        DEPLOYER,
        "spiffe://evil.example/ns/edge/sa/ingress",
        "spiffe://example.org/ns/edge/sa/ingress/x",
        "not a principal",
    ],
)
def test_untrusted_peer_is_ignored(
    root: CertificateAuthority, svid: IssuedCertificate, peer: str | None
) -> None:
    assert identifier(root).identify(element_for(svid), peer) is None


def test_untrusted_peer_header_is_not_even_parsed(root: CertificateAuthority) -> None:
    assert identifier(root).identify('By="unterminated', DEPLOYER) is None


@pytest.mark.parametrize("header", [None, ""])
def test_trusted_proxy_forwarding_no_xfcc_is_refused_naming_that(
    root: CertificateAuthority, header: str | None
) -> None:
    with pytest.raises(IdentityError) as caught:
        identifier(root).identify(header, INGRESS)
    assert caught.value.reason is Reason.CERTIFICATE_NOT_FORWARDED
    assert f"the trusted proxy {INGRESS} forwarded no x-forwarded-client-cert" in str(caught.value)


def test_forwarded_identity_believes_only_a_trusted_proxy(
    root: CertificateAuthority, svid: IssuedCertificate
) -> None:
    with pytest.raises(IdentityError) as caught:
        identifier(root).forwarded_identity(element_for(svid), DEPLOYER)
    assert caught.value.reason is Reason.UNTRUSTED_PROXY
    identity = identifier(root).forwarded_identity(element_for(svid), INGRESS)
    assert identity.subject == DEPLOYER


def test_only_the_nearest_element_counts(
    root: CertificateAuthority, svid: IssuedCertificate
) -> None:
    # A client can send any XFCC to the first proxy; that proxy appends its own element last.
    forged = root.issue_svid("spiffe://example.org/ns/prod/sa/admin")
    header = element_for(forged) + "," + element_for(svid)
    identity = identifier(root).identify(header, INGRESS)
    assert identity is not None
    assert identity.subject == DEPLOYER


def test_nearest_element_is_verified_like_a_certificate(root: CertificateAuthority) -> None:
    impostor = CertificateAuthority.root("example.org").issue_svid(DEPLOYER)
    with pytest.raises(IdentityError) as caught:
        identifier(root).identify(element_for(impostor), INGRESS)
    assert caught.value.reason is Reason.CHAIN_UNTRUSTED


def test_hash_must_match_cert(root: CertificateAuthority, svid: IssuedCertificate) -> None:
    with pytest.raises(IdentityError) as caught:
        identifier(root).identify(element_for(svid, hash_hex=HASH_1), INGRESS)
    assert caught.value.reason is Reason.XFCC_MISMATCH


def test_uri_must_match_cert(root: CertificateAuthority, svid: IssuedCertificate) -> None:
    header = element_for(svid, uri="spiffe://example.org/ns/prod/sa/admin")
    with pytest.raises(IdentityError) as caught:
        identifier(root).identify(header, INGRESS)
    assert caught.value.reason is Reason.XFCC_MISMATCH


def test_malformed_header_from_trusted_proxy(root: CertificateAuthority) -> None:
    with pytest.raises(IdentityError) as caught:
        identifier(root).identify('By="unterminated', INGRESS)
    assert caught.value.reason is Reason.MALFORMED_XFCC


@pytest.mark.parametrize(
    "header",
    [
        f"By={INGRESS};Hash={HASH_1};URI={DEPLOYER}",
        f"URI={DEPLOYER}",
        f'By={INGRESS};Hash={HASH_1};Subject="/CN=workload";DNS=deployer.example.org',
    ],
)
def test_uri_only_xfcc_is_refused_naming_the_missing_cert(
    root: CertificateAuthority, header: str
) -> None:
    """A name without its certificate is the proxy's word: signers could not verify it."""
    with pytest.raises(IdentityError) as caught:
        identifier(root).identify(header, INGRESS)
    assert caught.value.reason is Reason.CERTIFICATE_NOT_FORWARDED
    assert "must forward the client certificate" in caught.value.message
    assert "set_current_client_cert_details: {cert: true}" in caught.value.message
