"""Errors of key ceremonies. A misbehaving participant is named with frost's CheatingParticipant."""

from __future__ import annotations

from signer.errors import SignerError


class CeremonyError(SignerError):
    """A ceremony could not go on: bad parameters, an unknown or expired ceremony, a wrong step."""


class CeremonyFailed(CeremonyError):
    """The driver aborted a ceremony on every participant; no key was installed anywhere.

    `culprit` names the participant blamed (None when nobody is: a signer down, a timeout);
    `reporter` the signer that detected it (None when the driver did).
    """

    def __init__(
        self,
        ceremony_id: str,
        reason: str,
        *,
        culprit: int | None = None,
        reporter: int | None = None,
    ) -> None:
        self.ceremony_id = ceremony_id
        self.reason = reason
        self.culprit = culprit
        self.reporter = reporter
        blame = f"; participant {culprit} is to blame" if culprit is not None else ""
        super().__init__(f"ceremony {ceremony_id} aborted: {reason}{blame}")


class CommitIncomplete(CeremonyError):
    """Every recipient staged the same key but some did not confirm installing it.

    Those in `installed` now sign with the new key; those in `pending` still sign with the old one
    (their staged key is dropped when the ceremony expires). Two-phase commit cannot close this
    window; the error names both sides so an operator can reshare from the installed signers.
    """

    def __init__(self, ceremony_id: str, installed: list[int], pending: list[int]) -> None:
        self.ceremony_id = ceremony_id
        self.installed = installed
        self.pending = pending
        super().__init__(
            f"ceremony {ceremony_id}: installed on {installed}, NOT installed on {pending}"
        )
