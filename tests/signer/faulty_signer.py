"""A signer process that returns wrong signature shares: the 'signer returning wrong shares' fault.

Everything is the real signer except the FROST sign call, whose share is shifted by one.
"""

from __future__ import annotations

import sys

import signer.service
from signer.frost import SignatureShare, sign
from signer.frost.group import ORDER, Scalar


def corrupt_sign(*args: object, **kwargs: object) -> SignatureShare:
    share = sign(*args, **kwargs)  # type: ignore[arg-type]
    return SignatureShare(share.identifier, Scalar((share.share + 1) % ORDER))


if __name__ == "__main__":
    signer.service.sign = corrupt_sign  # type: ignore[assignment]
    from signer.cli import main

    sys.exit(main(["serve"]))
