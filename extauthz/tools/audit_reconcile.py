"""Audit reconciliation: the gateway's audit logs held against the signers' audit logs.

No token exists without t signature shares, and a signer writes its `sign_request` record (and
fsyncs it) before its share leaves. So the signers' logs are a record of every signature that a
compromised gateway cannot erase: whatever the gateway's log omits, t signers' logs still show.

    extauthz audit reconcile --gateway LOG [--gateway LOG...] --signer ID=LOG [--signer ...]

Each chain is verified first (`signer.audit.verify_log`); records that do not parse as records
(an altered line) are left out of what follows, so their absence shows as a gap too. Then:

- every `mint` in a gateway log (`jti`, `signers`) appears, in the log of each signer it names,
  as a `sign_request` for that jti with the same signer set and no `refusal` after it, and the
  signer's summary of what it signed (`sub`, `aud`, `exp`) is what the gateway says it minted;
- every signature in the signers' logs (an attempt for which every signer of its set whose log
  is given wrote an unrefused `sign_request`) appears in a gateway log: a token as a `mint` of its
  jti, a key endorsement as a `key_publish` of the kid it endorses; a signature whose jti a
  gateway recorded as `mint_abandoned` (the signers were asked, then the mint gave up: a deadline
  passed, the quorum was lost, the caller went away) is still a gap, `signature_abandoned`, since
  a gateway that kept the token could write the same: hold it against the failures callers saw;
- one jti names one token: no two mint records for it, no two different messages signed for it;
- a sign request carries its token's own jti as its request id (the honest gateway's rule);
- no signer used a nonce commitment twice (`commitment_sha256` of each `sign_request`).

A gap (exit 1) names the jti or kid, the log it was found in or is missing from, and what is
missing. Notes (no effect on the exit code) say what could not be checked or needs no action: a
mint naming a signer whose log was not given, shares from an attempt that never became a
signature (a signer failed mid-mint, the coordinator retried), a second complete attempt on a
minted message, sign records written before commitments were recorded.

Exit codes: 0 every chain intact and every mint and signature reconciled; 1 a chain is broken
or there is a gap; 2 the command could not run (a log unreadable, an argument malformed).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from signer.audit import AuditRecord, BadRecordError, VerifyResult, parse_record, verify_log
from signer.service import MAX_SHOWN

MINT_EVENT = "mint"
ABANDONED_EVENT = "mint_abandoned"  # the gateway asked signers for a jti, then gave up on it
KEY_PUBLISH_EVENT = "key_publish"  # the gateway's record of a key its signers endorsed
SIGN_EVENT = "sign_request"
REFUSAL_EVENT = "refusal"
SHOWN_PROBLEMS = 5


class GapKind(StrEnum):
    """Why reconciliation fails; each is a finding an operator must act on."""

    CHAIN_BROKEN = "chain_broken"  # a log's hash chain does not verify
    MALFORMED_RECORD = "malformed_record"  # a record of a known event lacks its fields
    MINT_NOT_SIGNED = "mint_not_signed"  # a mint that a signer it names never signed
    MINT_REFUSED = "mint_refused"  # a mint that a signer it names refused
    MINT_MISMATCH = "mint_mismatch"  # what the signers signed is not what the gateway recorded
    SIGNATURE_WITHOUT_MINT = "signature_without_mint"  # a token signed, recorded by no gateway
    SIGNATURE_ABANDONED = "signature_abandoned"  # a token signed that a gateway says it gave up
    ENDORSEMENT_NOT_RECORDED = "endorsement_not_recorded"  # a key endorsed, recorded by none
    JTI_REUSED = "jti_reused"  # one jti minted or signed as two tokens
    REQUEST_ID_MISMATCH = "request_id_mismatch"  # a sign request not named by its token's jti
    COMMITMENT_REUSED = "commitment_reused"  # a signer used one nonce commitment twice


class NoteKind(StrEnum):
    """What reconciliation could not check, or saw and found harmless."""

    SIGNER_LOG_MISSING = "signer_log_missing"
    UNFINISHED_ATTEMPT = "unfinished_attempt"
    RETRIED_ATTEMPT = "retried_attempt"
    NO_COMMITMENT_RECORDED = "no_commitment_recorded"


@dataclass(frozen=True, slots=True)
class Finding:
    kind: GapKind | NoteKind
    subject: str  # the jti, "endorsement <kid>", or "" for a whole log
    log: str  # the log it was found in, or the log it is missing from
    detail: str

    def __str__(self) -> str:
        what = f" {self.subject}" if self.subject else ""
        return f"{self.kind.value}{what} [{self.log}]: {self.detail}"

    def document(self) -> dict[str, str]:
        return {
            "kind": self.kind.value,
            "subject": self.subject,
            "log": self.log,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class AuditSource:
    """One audit log, read: its chain's verdict and the records that parsed."""

    label: str  # "gateway <path>" or "signer <id> <path>"
    path: str
    chain: VerifyResult
    records: tuple[AuditRecord, ...]


def read_source(label: str, path: str | os.PathLike[str]) -> AuditSource:
    """Verify a log's chain and keep every line that parses as a record with its own hash right.

    Raises AuditError (from signer.audit) when the file cannot be read."""
    chain = verify_log(path)
    records = []
    with open(path, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # a torn final line: never acknowledged
            try:
                records.append(parse_record(line))
            except BadRecordError:
                continue  # reported by the chain's verdict; its content is not believed
    return AuditSource(label, os.fspath(path), chain, tuple(records))


@dataclass(frozen=True, slots=True)
class _Mint:
    log: str
    seq: int
    subject: str  # the jti or "endorsement <kid>"
    signers: tuple[int, ...] | None  # None: a key_publish, which names none
    data: Mapping[str, object]


@dataclass(slots=True)
class _Share:
    """One `sign_request` in a signer's log, and whether a refusal for it followed."""

    signer: int
    log: str
    seq: int
    subject: str
    request_id: str
    message_sha256: str
    signers: tuple[int, ...]
    claims: Mapping[str, object]
    commitment: str | None
    refused: str | None = None  # the rule, when a refusal record followed

    @property
    def where(self) -> str:
        return f"signer {self.signer} seq {self.seq}"


@dataclass(frozen=True, slots=True)
class Reconciliation:
    sources: tuple[AuditSource, ...]
    gaps: tuple[Finding, ...]
    notes: tuple[Finding, ...]
    mints: int
    signatures: int

    @property
    def ok(self) -> bool:
        return not self.gaps

    def lines(self) -> list[str]:
        out = [f"{source.label}: {source.chain}".replace("\n", "\n    ") for source in self.sources]
        out += [f"GAP {gap}" for gap in self.gaps]
        out += [f"note {note}" for note in self.notes]
        verdict = "RECONCILED" if self.ok else "NOT RECONCILED"
        out.append(
            f"{verdict}: {self.mints} mint(s), {self.signatures} signature(s) in the signers' "
            f"logs; {len(self.gaps)} gap(s), {len(self.notes)} note(s)"
        )
        return out

    def document(self) -> dict[str, object]:
        return {
            "reconciled": self.ok,
            "mints": self.mints,
            "signatures": self.signatures,
            "logs": [
                {
                    "log": source.label,
                    "path": source.path,
                    "chain_ok": source.chain.ok,
                    "records": source.chain.records,
                    "head": source.chain.last_hash,
                }
                for source in self.sources
            ],
            "gaps": [gap.document() for gap in self.gaps],
            "notes": [note.document() for note in self.notes],
        }


def reconcile(
    gateways: Sequence[AuditSource], signers: Mapping[int, AuditSource]
) -> Reconciliation:
    """Hold the gateway logs against the signer logs (see the module docstring)."""
    work = _Work(set(signers))
    for source in (*gateways, *signers.values()):
        work.chain(source)
    mints = work.read_gateways(gateways)
    shares = work.read_signers(signers)
    work.check_subjects(mints, shares)
    work.check_mints(mints, shares)
    signatures = work.check_signatures(mints, shares)
    work.check_commitments(signers, shares)
    return Reconciliation(
        sources=(*gateways, *(signers[i] for i in sorted(signers))),
        gaps=tuple(work.gaps),
        notes=tuple(work.notes),
        mints=sum(1 for group in mints.values() for m in group if m.signers is not None),
        signatures=signatures,
    )


def _subject_of_claims(claims: Mapping[str, object], request_id: str) -> str:
    endorses = claims.get("endorses")
    if isinstance(endorses, str):
        return f"endorsement {endorses}"
    jti = claims.get("jti")
    return jti if isinstance(jti, str) and jti else request_id


def _int_list(value: object) -> tuple[int, ...] | None:
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    ):
        return None
    return tuple(sorted(value))


def _same(summarised: object, recorded: object) -> bool:
    """A signer's claims summary against the gateway's record: the summary cuts long strings."""
    if isinstance(summarised, str) and isinstance(recorded, str) and len(recorded) > MAX_SHOWN:
        return summarised == recorded[:MAX_SHOWN] + "..."
    return summarised == recorded and type(summarised) is type(recorded)


def _show_signers(signers: Iterable[int]) -> str:
    return "[" + ", ".join(str(i) for i in sorted(signers)) + "]"


@dataclass
class _Work:
    given: set[int]
    gaps: list[Finding] = field(default_factory=list)
    abandoned: dict[str, list[str]] = field(default_factory=dict)  # jti -> "log: why"
    notes: list[Finding] = field(default_factory=list)

    def gap(self, kind: GapKind, subject: str, log: str, detail: str) -> None:
        self.gaps.append(Finding(kind, subject, log, detail))

    def note(self, kind: NoteKind, subject: str, log: str, detail: str) -> None:
        self.notes.append(Finding(kind, subject, log, detail))

    # --- the chains ---------------------------------------------------------------------------

    def chain(self, source: AuditSource) -> None:
        if source.chain.ok:
            return
        problems = source.chain.problems
        shown = "; ".join(str(p) for p in problems[:SHOWN_PROBLEMS])
        more = (
            f"; and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
        )
        self.gap(
            GapKind.CHAIN_BROKEN,
            "",
            source.label,
            f"{len(problems)} problem(s): {shown}{more}; records that do not verify are left out",
        )

    # --- reading ------------------------------------------------------------------------------

    def read_gateways(self, gateways: Sequence[AuditSource]) -> dict[str, list[_Mint]]:
        mints: dict[str, list[_Mint]] = defaultdict(list)
        for source in gateways:
            for record in source.records:
                if record.event == MINT_EVENT:
                    jti, signers = record.data.get("jti"), _int_list(record.data.get("signers"))
                    if not isinstance(jti, str) or not jti or not signers:
                        self._malformed(source, record, "jti and signers")
                        continue
                    mints[jti].append(_Mint(source.label, record.seq, jti, signers, record.data))
                elif record.event == ABANDONED_EVENT:
                    jti, why = record.data.get("jti"), record.data.get("why")
                    if not isinstance(jti, str) or not jti:
                        self._malformed(source, record, "jti")
                        continue
                    self.abandoned.setdefault(jti, []).append(f"{source.label}: {why}")
                elif record.event == KEY_PUBLISH_EVENT:
                    kid = record.data.get("kid")
                    if not isinstance(kid, str) or not kid:
                        self._malformed(source, record, "kid")
                        continue
                    subject = f"endorsement {kid}"
                    mints[subject].append(_Mint(source.label, record.seq, subject, None, {}))
        return mints

    def read_signers(self, signers: Mapping[int, AuditSource]) -> dict[str, list[_Share]]:
        shares: dict[str, list[_Share]] = defaultdict(list)
        for identifier, source in sorted(signers.items()):
            # A refusal follows the sign_request it refuses; pair each with the oldest open one.
            open_requests: dict[tuple[str, str], list[_Share]] = defaultdict(list)
            for record in source.records:
                data = record.data
                if record.event == SIGN_EVENT:
                    share = self._share(identifier, source, record)
                    if share is not None:
                        shares[share.subject].append(share)
                        open_requests[share.request_id, share.message_sha256].append(share)
                elif record.event == REFUSAL_EVENT:
                    key = (str(data.get("request_id", "")), str(data.get("message_sha256", "")))
                    waiting = open_requests.get(key)
                    if waiting:
                        waiting.pop(0).refused = str(data.get("rule", "?"))
        return shares

    def _share(self, identifier: int, source: AuditSource, record: AuditRecord) -> _Share | None:
        data = record.data
        request_id, digest = data.get("request_id"), data.get("message_sha256")
        signers, claims = _int_list(data.get("signers")), data.get("claims")
        commitment = data.get("commitment_sha256")
        if (
            not isinstance(request_id, str)
            or not isinstance(digest, str)
            or not signers
            or not isinstance(claims, dict)
            or not (commitment is None or isinstance(commitment, str))
        ):
            self._malformed(source, record, "request_id, message_sha256, signers and claims")
            return None
        return _Share(
            signer=identifier,
            log=source.label,
            seq=record.seq,
            subject=_subject_of_claims(claims, request_id),
            request_id=request_id,
            message_sha256=digest,
            signers=signers,
            claims=claims,
            commitment=commitment,
        )

    def _malformed(self, source: AuditSource, record: AuditRecord, fields: str) -> None:
        self.gap(
            GapKind.MALFORMED_RECORD,
            "",
            source.label,
            f"seq {record.seq}: a {record.event} record without well-typed {fields}",
        )

    # --- one jti, one token -------------------------------------------------------------------

    def check_subjects(
        self, mints: Mapping[str, list[_Mint]], shares: Mapping[str, list[_Share]]
    ) -> None:
        for subject, group in sorted(mints.items()):
            tokens = [m for m in group if m.signers is not None]
            if len(tokens) > 1:
                where = ", ".join(f"{m.log} seq {m.seq}" for m in tokens)
                self.gap(
                    GapKind.JTI_REUSED,
                    subject,
                    tokens[1].log,
                    f"minted {len(tokens)} times: {where}",
                )
        for subject, records in sorted(shares.items()):
            signed = [s for s in records if s.refused is None]
            messages = sorted({s.message_sha256 for s in signed})
            if len(messages) > 1:
                where = "; ".join(
                    f"{digest[:16]} by "
                    + ", ".join(s.where for s in signed if s.message_sha256 == digest)
                    for digest in messages
                )
                self.gap(
                    GapKind.JTI_REUSED,
                    subject,
                    signed[0].log,
                    f"{len(messages)} different messages signed under it: {where}",
                )
            for share in signed:
                jti = share.claims.get("jti")
                if isinstance(jti, str) and jti != share.request_id:
                    self.gap(
                        GapKind.REQUEST_ID_MISMATCH,
                        subject,
                        share.log,
                        f"seq {share.seq}: signed under request id {share.request_id[:64]!r}, "
                        "not its token's jti",
                    )

    # --- gateway -> signers -------------------------------------------------------------------

    def check_mints(
        self, mints: Mapping[str, list[_Mint]], shares: Mapping[str, list[_Share]]
    ) -> None:
        for subject, group in sorted(mints.items()):
            for mint in group:
                if mint.signers is None:
                    continue  # a key_publish names no signers: checked from the signers' side
                for signer in mint.signers:
                    self._mint_at(mint, signer, shares.get(subject, []))

    def _mint_at(self, mint: _Mint, signer: int, shares: Sequence[_Share]) -> None:
        assert mint.signers is not None
        if signer not in self.given:
            self.note(
                NoteKind.SIGNER_LOG_MISSING,
                mint.subject,
                f"signer {signer}",
                f"{mint.log} seq {mint.seq} names signer {signer}, whose log was not given",
            )
            return
        here = [s for s in shares if s.signer == signer]
        match = next((s for s in here if s.signers == mint.signers and s.refused is None), None)
        log = f"signer {signer}"
        origin = f"{mint.log} seq {mint.seq} says signers {_show_signers(mint.signers)} signed it"
        if match is None:
            refused = [s for s in here if s.refused is not None]
            if refused:
                self.gap(
                    GapKind.MINT_REFUSED,
                    mint.subject,
                    log,
                    f"{origin}; signer {signer} refused it ({refused[0].refused}, seq "
                    f"{refused[0].seq})",
                )
            elif here:
                other = ", ".join(f"{_show_signers(s.signers)} seq {s.seq}" for s in here)
                self.gap(
                    GapKind.MINT_NOT_SIGNED,
                    mint.subject,
                    log,
                    f"{origin}; signer {signer} signed it only with signers {other}",
                )
            else:
                self.gap(
                    GapKind.MINT_NOT_SIGNED,
                    mint.subject,
                    log,
                    f"{origin}; signer {signer}'s log has no sign_request for it",
                )
            return
        differences = [
            f"{name} {match.claims.get(claim)!r} where the gateway recorded "
            f"{mint.data.get(field_)!r}"
            for name, claim, field_ in (
                ("sub", "sub", "subject"),
                ("aud", "aud", "audience"),
                ("exp", "exp", "expires_at"),
            )
            if not _same(match.claims.get(claim), mint.data.get(field_))
        ]
        if differences:
            self.gap(
                GapKind.MINT_MISMATCH,
                mint.subject,
                log,
                f"{origin}; signer {signer} signed (seq {match.seq}) " + "; ".join(differences),
            )

    # --- signers -> gateway -------------------------------------------------------------------

    def check_signatures(
        self, mints: Mapping[str, list[_Mint]], shares: Mapping[str, list[_Share]]
    ) -> int:
        """Every complete attempt (a signature) recorded by a gateway; returns how many."""
        signatures = 0
        for subject, group in sorted(shares.items()):
            attempts: dict[tuple[tuple[int, ...], str], list[_Share]] = defaultdict(list)
            for share in group:
                if share.refused is None:
                    attempts[share.signers, share.message_sha256].append(share)
            recorded = mints.get(subject, [])
            for (members, digest), signed in sorted(attempts.items()):
                given = [i for i in members if i in self.given]
                missing = sorted(set(given) - {s.signer for s in signed})
                unseen = [i for i in members if i not in self.given]
                if missing:
                    if not recorded:
                        self.note(
                            NoteKind.UNFINISHED_ATTEMPT,
                            subject,
                            signed[0].log,
                            f"{', '.join(s.where for s in signed)} gave shares for message "
                            f"{digest[:16]} with signers {_show_signers(members)}; signer(s) "
                            f"{_show_signers(missing)} did not: no signature",
                        )
                    continue
                signatures += 1
                self._signature(subject, members, digest, signed, unseen, recorded)
        return signatures

    def _signature(
        self,
        subject: str,
        members: tuple[int, ...],
        digest: str,
        signed: Sequence[_Share],
        unseen: Sequence[int],
        recorded: Sequence[_Mint],
    ) -> None:
        who = ", ".join(s.where for s in signed)
        caveat = (
            f" (the logs of signer(s) {_show_signers(unseen)} were not given)" if unseen else ""
        )
        if not recorded:
            endorsement = subject.startswith("endorsement ")
            claims = signed[0].claims
            about = (
                "" if endorsement else f" for sub {claims.get('sub')!r}, aud {claims.get('aud')!r}"
            )
            signed_what = (
                f"signers {_show_signers(members)} signed message {digest[:16]}{about} ({who})"
                f"{caveat}"
            )
            gave_up = None if endorsement else self.abandoned.get(subject)
            if gave_up:
                # Still a gap: a gateway that kept the token could say the same. Held against
                # the failures callers saw (503s) at that time, it is usually a deadline.
                self.gap(
                    GapKind.SIGNATURE_ABANDONED,
                    subject,
                    "every gateway log",
                    f"{signed_what}; no gateway log records the token, and {'; '.join(gave_up)} "
                    "says it gave up on it",
                )
                return
            self.gap(
                GapKind.ENDORSEMENT_NOT_RECORDED if endorsement else GapKind.SIGNATURE_WITHOUT_MINT,
                subject,
                "every gateway log",
                f"{signed_what}; no gateway log records it",
            )
            return
        tokens = [m for m in recorded if m.signers is not None]
        if tokens and all(m.signers != members for m in tokens):
            self.note(
                NoteKind.RETRIED_ATTEMPT,
                subject,
                signed[0].log,
                f"signers {_show_signers(members)} also completed an attempt on the minted "
                f"message ({who}){caveat}; the gateway recorded signers "
                f"{_show_signers(tokens[0].signers or ())}",
            )

    # --- nonces -------------------------------------------------------------------------------

    def check_commitments(
        self, signers: Mapping[int, AuditSource], shares: Mapping[str, list[_Share]]
    ) -> None:
        by_signer: dict[int, dict[str, _Share]] = defaultdict(dict)
        unrecorded: dict[int, int] = defaultdict(int)
        for share in sorted(
            (s for g in shares.values() for s in g), key=lambda s: (s.signer, s.seq)
        ):
            if share.commitment is None:
                unrecorded[share.signer] += 1
                continue
            first = by_signer[share.signer].setdefault(share.commitment, share)
            if first is not share:
                self.gap(
                    GapKind.COMMITMENT_REUSED,
                    share.subject,
                    share.log,
                    f"commitment {share.commitment[:16]} used at seq {first.seq} "
                    f"({first.subject}) and again at seq {share.seq}",
                )
        for signer, count in sorted(unrecorded.items()):
            self.note(
                NoteKind.NO_COMMITMENT_RECORDED,
                "",
                signers[signer].label,
                f"{count} sign_request record(s) name no commitment (written before commitments "
                "were recorded): nonce reuse cannot be ruled out for them",
            )


def parse_signer_argument(text: str) -> tuple[int, str]:
    """`ID=PATH` -> (ID, PATH); ValueError says what is wrong."""
    identifier, sep, path = text.partition("=")
    if not sep or not path or not identifier.strip().isdigit() or int(identifier) < 1:
        raise ValueError(f"{text!r} is not ID=PATH (ID a signer's FROST identifier, from 1)")
    return int(identifier), path
