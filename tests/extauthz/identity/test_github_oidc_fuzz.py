"""Nothing a caller sends makes the verifier raise anything but IdentityError."""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauthz.identity import GitHubOidcVerifier, IdentityError
from tests.helpers import Run
from tests.helpers.oidc_issuer import LocalOidcIssuer, compact_jws, rs256_signer

# The fixtures (event loop, issuer, verifier) are meant to be shared by every example.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
HEADER_NAMES = ["alg", "typ", "kid", "crit", "b64", "jku", "jwk", "x5u", "x5c", "cty", "zip"]
CLAIM_NAMES = ["iss", "aud", "sub", "exp", "iat", "nbf", "repository_id", "repository_owner_id"]


def outcome(run: Run, verifier: GitHubOidcVerifier, token: Any) -> str:
    try:
        run(verifier.verify(token))
    except IdentityError as error:
        return error.reason
    return "accepted"


@FUZZ
@given(token=st.text(max_size=300) | st.binary(max_size=300))
def test_random_text_and_bytes(run: Run, verifier: GitHubOidcVerifier, token: str | bytes) -> None:
    assert outcome(run, verifier, token) != "accepted"


@FUZZ
@given(
    parts=st.lists(
        st.text(
            alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60
        ),
        min_size=1,
        max_size=5,
    )
)
def test_random_base64url_segments(
    run: Run, verifier: GitHubOidcVerifier, parts: list[str]
) -> None:
    assert outcome(run, verifier, ".".join(parts)) != "accepted"


@FUZZ
@given(
    changes=st.dictionaries(st.sampled_from(HEADER_NAMES), json_values, min_size=1, max_size=3),
    signed=st.booleans(),
)
def test_hostile_header_members(
    run: Run,
    verifier: GitHubOidcVerifier,
    issuer: LocalOidcIssuer,
    changes: dict[str, Any],
    signed: bool,
) -> None:
    sign = rs256_signer(issuer.signing_key.private_key) if signed else None
    token = compact_jws(issuer.header(changes), issuer.claims(), sign)
    result = outcome(run, verifier, token)
    if not signed:
        assert result != "accepted"


EDGE_NUMBERS = [2**31, 2**53 + 1, 2**63, 2**64, 10**400, -(10**400), 1e308, -0.0]
dates = st.sampled_from(EDGE_NUMBERS) | st.integers() | st.floats() | json_values


@settings(FUZZ, max_examples=300)
@given(
    changes=st.fixed_dictionaries(
        {},
        optional={
            **dict.fromkeys(["exp", "iat", "nbf"], dates),
            **dict.fromkeys(
                ["iss", "aud", "sub", "repository_id", "repository_owner_id"], json_values
            ),
        },
    )
)
def test_hostile_claims_really_signed_by_the_issuer(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, changes: dict[str, Any]
) -> None:
    """The signature passes, so every claim check after it meets the hostile values."""
    outcome(run, verifier, issuer.mint(changes))


@FUZZ
@given(data=st.data())
def test_mutated_valid_tokens(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, data: st.DataObject
) -> None:
    token = issuer.mint()
    position = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    replacement = data.draw(st.text(max_size=3))
    mutated = token[:position] + replacement + token[position + 1 :]
    if outcome(run, verifier, mutated) == "accepted":
        # Only a change that decodes to the very same bytes (base64's unused trailing bits)
        # may pass: the signature covers the content, not its spelling.
        assert list(map(_decode, mutated.split("."))) == list(map(_decode, token.split(".")))


def _decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
