"""Errors carry a machine-readable reason and loggable text."""

from __future__ import annotations

import hashlib

from extauthz.errors import ExtAuthzError
from extauthz.identity import (
    IdentityConfigError,
    IdentityError,
    MissingCredential,
    Reason,
    token_reference,
)


def test_reason_is_data_and_text() -> None:
    error = IdentityError(Reason.TOKEN_EXPIRED, "token has expired")
    assert error.reason == "token_expired"
    assert error.message == "token has expired"
    assert str(error) == "token_expired: token has expired"
    assert isinstance(error, ExtAuthzError)


def test_missing_credential_is_an_identity_error() -> None:
    error = MissingCredential()
    assert isinstance(error, IdentityError)
    assert error.reason is Reason.MISSING_CREDENTIAL


def test_configuration_errors_are_not_identity_errors() -> None:
    # A caller can never cause one, so the edge must not turn it into a 401.
    assert not issubclass(IdentityConfigError, IdentityError)
    assert issubclass(IdentityConfigError, ExtAuthzError)


def test_token_reference_is_a_sha256_prefix() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"
    assert token_reference(token) == hashlib.sha256(token.encode()).hexdigest()[:12]
    assert token_reference(token.encode()) == token_reference(token)


def test_reasons_are_snake_case() -> None:
    for reason in Reason:
        assert reason.value == reason.name.lower()
