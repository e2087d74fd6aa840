"""Nothing a caller sends makes the verifier raise anything but IdentityError, and what it
accepts is exactly what the documented rules accept: headers and claims are held against
independent oracles written from those rules (`header_outcome`, `claim_violations`)."""

from __future__ import annotations

import base64
import math
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from extauthz.dev.github import DEFAULT_AUDIENCE, LocalOidcIssuer, compact_jws, rs256_signer
from extauthz.identity import GitHubOidcVerifier, IdentityError, Reason
from tests.extauthz.identity.conftest import START
from tests.helpers import Run

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


ISSUER_KID = "key-1"  # the fixture issuer's signing key
NOW = START  # the fixtures' manual clock, which the tests never move
MAX_AGE, MAX_LIFETIME, LEEWAY = 600, 3600, 30  # the verifier fixture's limits (the defaults)
MAX_DATE = 2**40


def holds_non_finite(value: object) -> bool:
    """json.dumps writes NaN and Infinity, which strict JSON (and so the verifier) refuses."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(holds_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(holds_non_finite(v) for v in value)
    return False


def header_outcome(header: dict[str, Any], *, signed: bool) -> str:
    """The one reason a token with this header is refused, or "accepted" (its claims valid)."""
    if holds_non_finite(header):
        return Reason.MALFORMED_TOKEN
    if header.get("alg") != "RS256":
        return Reason.ALG_NOT_ALLOWED
    if "typ" in header and header["typ"] != "JWT":
        return Reason.BAD_TOKEN_TYPE
    if "crit" in header or "b64" in header:
        return Reason.CRIT_NOT_SUPPORTED
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= 256:
        return Reason.MISSING_KID
    if not signed:
        return Reason.MALFORMED_TOKEN  # an empty signature segment
    if kid != ISSUER_KID:
        return Reason.UNKNOWN_KID
    # jku, jwk, x5u, x5c, cty, zip: never read, so they change nothing.
    return "accepted"


def claim_violations(claims: dict[str, Any], *, issuer: str) -> set[Reason]:
    """Every rule these (really signed) claims break; empty means the token must be accepted."""
    if holds_non_finite(claims):
        return {Reason.MALFORMED_TOKEN}
    found: set[Reason] = set()
    if claims.get("iss") != issuer or not isinstance(claims.get("iss"), str):
        found.add(Reason.UNKNOWN_ISSUER)
    if claims.get("aud") != DEFAULT_AUDIENCE or not isinstance(claims.get("aud"), str):
        found.add(Reason.BAD_AUDIENCE)
    if any(claims.get(name) is None for name in ("exp", "iat", "nbf", "sub")):
        found.add(Reason.MISSING_CLAIM)
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        found |= {Reason.MISSING_CLAIM, Reason.INVALID_CLAIM}
    for name in ("repository_id", "repository_owner_id"):
        value = claims.get(name)
        if not isinstance(value, str):
            found.add(Reason.MISSING_CLAIM)
        elif not (value.isascii() and value.isdigit()):
            found.add(Reason.INVALID_CLAIM)
    dates: dict[str, float] = {}
    for name in ("exp", "iat", "nbf"):
        date = claims.get(name)
        if isinstance(date, int | float) and not isinstance(date, bool) and 0 <= date < MAX_DATE:
            dates[name] = float(date)
        else:
            found.add(Reason.INVALID_CLAIM)
    if len(dates) == 3:
        exp, iat, nbf = dates["exp"], dates["iat"], dates["nbf"]
        if exp <= iat:
            found.add(Reason.INVALID_CLAIM)
        elif exp - iat > MAX_LIFETIME:
            found.add(Reason.TOKEN_LIFETIME_TOO_LONG)
        if exp <= NOW - LEEWAY:
            found.add(Reason.TOKEN_EXPIRED)
        if nbf > NOW + LEEWAY:
            found.add(Reason.TOKEN_NOT_YET_VALID)
        if iat > NOW + LEEWAY:
            found.add(Reason.IAT_IN_FUTURE)
        if NOW - iat > MAX_AGE + LEEWAY:
            found.add(Reason.TOKEN_TOO_OLD)
    return found


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
    header = issuer.header(changes)
    token = compact_jws(header, issuer.claims(), sign)
    result = outcome(run, verifier, token)
    event(f"header: {result}")
    assert result == header_outcome(header, signed=signed)


EDGE_NUMBERS = [2**31, 2**53 + 1, 2**63, 2**64, 10**400, -(10**400), 1e308, -0.0]
# Near the clock too, so that every time rule (expiry, nbf, iat, age, lifetime) is met.
near_now = st.integers(min_value=int(START) - 7200, max_value=int(START) + 86400)
dates = st.sampled_from(EDGE_NUMBERS) | near_now | st.integers() | st.floats() | json_values


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
    """The signature passes, so every claim check after it meets the hostile values: accepted
    exactly when no rule is broken, and refused for one of the rules that is."""
    assert_claims_judged_by_the_rules(run, verifier, issuer, changes)


@settings(FUZZ, max_examples=300)
@given(
    changes=st.fixed_dictionaries(
        {}, optional=dict.fromkeys(["exp", "iat", "nbf"], near_now | st.sampled_from(EDGE_NUMBERS))
    )
)
def test_hostile_dates_really_signed_by_the_issuer(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, changes: dict[str, Any]
) -> None:
    """Only the dates move, around the clock: every time rule (expiry, nbf, iat, age, and the
    lifetime exp - iat) decides some examples on its own."""
    assert_claims_judged_by_the_rules(run, verifier, issuer, changes)


def assert_claims_judged_by_the_rules(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, changes: dict[str, Any]
) -> None:
    claims = issuer.claims(changes)  # what mint signs: the clock does not move here
    result = outcome(run, verifier, issuer.mint(changes))
    broken = claim_violations(claims, issuer=issuer.issuer)
    event(f"claims: {result}")
    if broken:
        assert result in broken, (result, broken)
    else:
        assert result == "accepted", result


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
