"""The development CA (extauthz.dev.certs) with time pinned: certificates are valid around
`VALID_AT`, and tests verify with a clock there instead of the wall clock."""

from __future__ import annotations

from datetime import UTC, datetime

from extauthz.dev import certs
from extauthz.dev.certs import IssuedCertificate, pem

__all__ = ["VALID_AT", "CertificateAuthority", "IssuedCertificate", "pem"]

VALID_AT = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)


class CertificateAuthority(certs.CertificateAuthority):
    __slots__ = ()

    @classmethod
    def instant(cls) -> datetime:
        return VALID_AT
