"""Signer processes for tests: the local stack's (extauthz.dev.signers) with the stand-in evidence
checker (benchmarks/standin_signing.py) unless a stack composes the gateway's own, and signers
that return wrong shares (tests/signer/faulty_signer.py) where asked."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from benchmarks.standin_signing import STAND_IN_CHECKER, evidence_for, token_message
from extauthz.dev import signers

__all__ = ["REPO", "SignerCluster", "evidence_for", "token_message"]

REPO = Path(__file__).resolve().parents[2]
FAULTY_SIGNER = "tests.signer.faulty_signer"


class SignerCluster(signers.SignerCluster):
    def __init__(
        self,
        directory: Path,
        t: int,
        n: int,
        *,
        faulty: Iterable[int] = (),
        dealer: bool = True,
        spare: int = 0,
        evidence_checker: str = STAND_IN_CHECKER,
    ) -> None:
        super().__init__(
            directory, t, n, dealer=dealer, spare=spare, evidence_checker=evidence_checker
        )
        for identifier in faulty:
            self.signers[identifier].module = FAULTY_SIGNER
