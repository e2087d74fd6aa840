"""`extauthz audit reconcile` on logs written record by record, in the shapes the gateway
(`Pipeline._record`) and the signers (`SignerService.Sign`) write: each gap kind is found and
named, and what is harmless is a note. The same command on logs of a real stack, and on those
logs tampered with, is in test_audit_reconcile_stack.py."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from extauthz.cli import main
from extauthz.tools.audit_reconcile import (
    GapKind,
    NoteKind,
    Reconciliation,
    parse_signer_argument,
    read_source,
    reconcile,
)
from signer.audit import AuditLog

SUBJECT = "spiffe://prod.test/ns/shop/sa/web"
AUDIENCE = "https://orders.internal"
EXPIRES = 1_900_000_900


@dataclass
class Logs:
    """A gateway log and three signer logs in a directory, written in production's shapes."""

    directory: Path
    gateway: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    signers: dict[int, list[tuple[str, dict[str, object]]]] = field(
        default_factory=lambda: {1: [], 2: [], 3: []}
    )

    def mint(self, jti: str, signers: Iterable[int], **overrides: object) -> None:
        data: dict[str, object] = {
            "subject": SUBJECT,
            "identity_kind": "spiffe",
            "rule": "shop-reads-orders",
            "audience": AUDIENCE,
            "scope": "orders:read",
            "jti": jti,
            "token_ref": "sha256:0123456789abcdef",
            "signers": sorted(signers),
            "expires_at": EXPIRES,
        }
        data.update(overrides)
        self.gateway.append(("mint", data))

    def sign(
        self,
        signer: int,
        jti: str,
        signers: Iterable[int],
        *,
        message: bytes | None = None,
        request_id: str | None = None,
        commitment: str | None = None,
        claims: Mapping[str, object] | None = None,
        refused: str | None = None,
    ) -> None:
        message = message or f"message of {jti}".encode()
        digest = hashlib.sha256(message).hexdigest()
        request_id = jti if request_id is None else request_id
        self.signers[signer].append(
            (
                "sign_request",
                {
                    "request_id": request_id,
                    "message_sha256": digest,
                    "signers": sorted(signers),
                    "commitment_sha256": commitment or uuid.uuid4().hex * 2,
                    "claims": dict(
                        claims or {"jti": jti, "sub": SUBJECT, "aud": AUDIENCE, "exp": EXPIRES}
                    ),
                },
            )
        )
        if refused is not None:
            self.signers[signer].append(
                (
                    "refusal",
                    {
                        "request_id": request_id,
                        "rule": refused,
                        "detail": "refused",
                        "message_sha256": digest,
                    },
                )
            )

    def signed_by(self, jti: str, signers: Iterable[int], **kwargs: object) -> None:
        """What the honest path leaves: every signer of the attempt signed it."""
        members = sorted(signers)
        for signer in members:
            self.sign(signer, jti, members, **kwargs)  # type: ignore[arg-type]

    def write(self) -> tuple[Path, dict[int, Path]]:
        gateway = self.directory / "gateway.jsonl"
        write_log(gateway, self.gateway)
        paths = {}
        for signer, records in self.signers.items():
            paths[signer] = self.directory / f"signer-{signer}.jsonl"
            write_log(paths[signer], records)
        return gateway, paths

    def reconcile(self, *, only: Iterable[int] | None = None) -> Reconciliation:
        gateway, paths = self.write()
        chosen = set(paths) if only is None else set(only)
        return reconcile(
            [read_source("gateway", gateway)],
            {i: read_source(f"signer {i}", p) for i, p in paths.items() if i in chosen},
        )


def write_log(path: Path, records: Iterable[tuple[str, Mapping[str, object]]]) -> None:
    path.unlink(missing_ok=True)
    with AuditLog(path) as log:
        for event, data in records:
            log.append(event, data)


def kinds(result: Reconciliation) -> list[tuple[str, str]]:
    return [(gap.kind.value, gap.subject) for gap in result.gaps]


def note_kinds(result: Reconciliation) -> list[tuple[str, str]]:
    return [(note.kind.value, note.subject) for note in result.notes]


@pytest.fixture
def logs(tmp_path: Path) -> Logs:
    return Logs(tmp_path)


def test_logs_of_honest_mints_reconcile(logs: Logs) -> None:
    for signers in ([1, 2], [2, 3], [1, 3]):
        jti = str(uuid.uuid4())
        logs.mint(jti, signers)
        logs.signed_by(jti, signers)
    logs.gateway.append(("deny", {"status": 401, "reason": "missing_credential"}))

    result = logs.reconcile()

    assert result.ok, result.lines()
    assert (result.mints, result.signatures) == (3, 3)
    assert result.notes == ()
    assert result.lines()[-1].startswith("RECONCILED: 3 mint(s), 3 signature(s)")


def test_a_signature_the_gateway_log_does_not_record_is_named_from_the_signers_logs(
    logs: Logs,
) -> None:
    hidden = str(uuid.uuid4())
    logs.signed_by(hidden, [1, 3])  # the gateway's record of it is gone

    result = logs.reconcile()

    assert kinds(result) == [("signature_without_mint", hidden)]
    (gap,) = result.gaps
    assert gap.log == "every gateway log"
    assert "signers [1, 3] signed message" in gap.detail
    assert f"sub {SUBJECT!r}" in gap.detail
    assert "signer 1 seq 1, signer 3 seq 1" in gap.detail


def test_a_signature_the_gateway_says_it_gave_up_on_is_a_gap_that_says_so(logs: Logs) -> None:
    """A mint that timed out after t signers signed leaves the same trace as a token a gateway
    kept quiet; its `mint_abandoned` record explains it, and reconciliation still names it."""
    abandoned, hidden = str(uuid.uuid4()), str(uuid.uuid4())
    logs.signed_by(abandoned, [1, 2])
    logs.gateway.append(("mint_abandoned", {"jti": abandoned, "why": "deadline exceeded"}))
    logs.signed_by(hidden, [2, 3])
    only_asked = str(uuid.uuid4())  # given up on before t signers signed: nothing to say
    logs.gateway.append(("mint_abandoned", {"jti": only_asked, "why": "cancelled"}))

    result = logs.reconcile()

    assert sorted(kinds(result)) == sorted(
        [("signature_abandoned", abandoned), ("signature_without_mint", hidden)]
    )
    gap = next(g for g in result.gaps if g.subject == abandoned)
    assert "says it gave up on it" in gap.detail
    assert "deadline exceeded" in gap.detail


def test_a_mint_a_signer_it_names_never_signed_is_a_gap(logs: Logs) -> None:
    jti = str(uuid.uuid4())
    logs.mint(jti, [1, 2])
    logs.sign(1, jti, [1, 2])  # signer 2 has nothing

    result = logs.reconcile()

    assert kinds(result) == [("mint_not_signed", jti)]
    assert result.gaps[0].log == "signer 2"
    assert "signer 2's log has no sign_request for it" in result.gaps[0].detail
    # Signer 1's share alone never made a signature, and the gap already names the mint.
    assert result.signatures == 0


def test_a_mint_a_signer_refused_is_a_gap_naming_the_rule(logs: Logs) -> None:
    jti = str(uuid.uuid4())
    logs.mint(jti, [1, 2])
    logs.sign(1, jti, [1, 2])
    logs.sign(2, jti, [1, 2], refused="guard:subject_revoked")

    result = logs.reconcile()

    assert kinds(result) == [("mint_refused", jti)]
    assert "refused it (guard:subject_revoked" in result.gaps[0].detail


def test_a_mint_recorded_with_other_signers_than_signed_it_is_a_gap(logs: Logs) -> None:
    jti = str(uuid.uuid4())
    logs.mint(jti, [1, 2])
    logs.signed_by(jti, [1, 3])

    result = logs.reconcile()

    assert kinds(result) == [("mint_not_signed", jti)] * 2
    assert [gap.log for gap in result.gaps] == ["signer 1", "signer 2"]
    assert "signer 1 signed it only with signers [1, 3] seq 1" in result.gaps[0].detail
    assert "signer 2's log has no sign_request for it" in result.gaps[1].detail
    assert note_kinds(result) == [("retried_attempt", jti)]


def test_a_mint_whose_signed_claims_differ_from_the_gateways_record_is_a_gap(logs: Logs) -> None:
    jti = str(uuid.uuid4())
    logs.mint(jti, [1, 2], subject="spiffe://prod.test/ns/shop/sa/innocent")
    logs.signed_by(jti, [1, 2])

    result = logs.reconcile()

    assert kinds(result) == [("mint_mismatch", jti), ("mint_mismatch", jti)]
    assert f"sub {SUBJECT!r} where the gateway recorded" in result.gaps[0].detail


def test_a_long_subject_cut_short_in_the_signers_summary_still_matches(logs: Logs) -> None:
    jti, subject = str(uuid.uuid4()), "spiffe://prod.test/" + "a" * 600
    logs.mint(jti, [1, 2], subject=subject)
    claims = {"jti": jti, "sub": subject[:256] + "...", "aud": AUDIENCE, "exp": EXPIRES}
    logs.signed_by(jti, [1, 2], claims=claims)

    assert logs.reconcile().ok


def test_shares_that_never_became_a_signature_are_a_note_not_a_gap(logs: Logs) -> None:
    # A quorum failure mid-mint: signer 1 gave a share, signer 2 refused; nothing was minted.
    jti = str(uuid.uuid4())
    logs.sign(1, jti, [1, 2])
    logs.sign(2, jti, [1, 2], refused="guard:evidence_budget")

    result = logs.reconcile()

    assert result.ok
    assert note_kinds(result) == [("unfinished_attempt", jti)]
    assert "signer(s) [2] did not: no signature" in result.notes[0].detail


def test_a_retry_that_completed_twice_on_the_same_message_is_a_note(logs: Logs) -> None:
    # The coordinator gave up on signer 2 (too slow) although it did sign, and retried with 3.
    jti = str(uuid.uuid4())
    logs.mint(jti, [1, 3])
    logs.signed_by(jti, [1, 2])
    logs.signed_by(jti, [1, 3])

    result = logs.reconcile()

    assert result.ok, result.lines()
    assert note_kinds(result) == [("retried_attempt", jti)]


def test_two_different_messages_signed_under_one_jti_is_a_gap(logs: Logs) -> None:
    jti = str(uuid.uuid4())
    logs.mint(jti, [1, 2])
    logs.signed_by(jti, [1, 2])
    logs.signed_by(jti, [1, 3], message=b"another token with the same jti")

    result = logs.reconcile()

    assert ("jti_reused", jti) in kinds(result)


def test_one_jti_minted_twice_is_a_gap(logs: Logs) -> None:
    jti = str(uuid.uuid4())
    logs.mint(jti, [1, 2])
    logs.mint(jti, [1, 2])
    logs.signed_by(jti, [1, 2])

    assert kinds(logs.reconcile()) == [("jti_reused", jti)]


def test_a_signature_asked_for_under_another_request_id_is_a_gap(logs: Logs) -> None:
    jti = str(uuid.uuid4())
    logs.mint(jti, [1, 2])
    logs.signed_by(jti, [1, 2], request_id="something-else")

    result = logs.reconcile()

    assert kinds(result) == [("request_id_mismatch", jti)] * 2


def test_a_commitment_used_twice_by_one_signer_is_a_gap(logs: Logs) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    reused = "ab" * 32
    for jti in (first, second):
        logs.mint(jti, [1, 2])
        logs.sign(1, jti, [1, 2], commitment=reused)
        logs.sign(2, jti, [1, 2])

    result = logs.reconcile()

    assert kinds(result) == [("commitment_reused", second)]
    assert result.gaps[0].log == "signer 1"
    assert f"commitment {reused[:16]} used at seq 1 ({first}) and again at seq 2" in str(
        result.gaps[0]
    )


def test_records_without_a_commitment_are_a_note(logs: Logs) -> None:
    jti = str(uuid.uuid4())
    logs.mint(jti, [1, 2])
    logs.signed_by(jti, [1, 2])
    for _, data in logs.signers[1]:
        del data["commitment_sha256"]  # as signers wrote them before the commitment was added

    result = logs.reconcile()

    assert result.ok
    assert note_kinds(result) == [("no_commitment_recorded", "")]


def test_a_signer_log_not_given_is_a_note_and_its_partners_evidence_still_counts(
    logs: Logs,
) -> None:
    minted, hidden = str(uuid.uuid4()), str(uuid.uuid4())
    logs.mint(minted, [1, 3])
    logs.signed_by(minted, [1, 3])
    logs.signed_by(hidden, [1, 3])

    result = logs.reconcile(only=[1, 2])

    assert note_kinds(result) == [("signer_log_missing", minted)]
    assert kinds(result) == [("signature_without_mint", hidden)]
    assert "the logs of signer(s) [3] were not given" in result.gaps[0].detail


def test_an_endorsement_is_reconciled_against_the_gateways_key_publish(logs: Logs) -> None:
    endorsement = {"endorses": "new-kid"}
    logs.signed_by("endorse-new-kid", [1, 2], claims=endorsement)
    assert kinds(logs.reconcile()) == [("endorsement_not_recorded", "endorsement new-kid")]

    logs.gateway.append(("key_publish", {"kid": "new-kid", "endorsed_by": "old-kid"}))
    result = logs.reconcile()
    assert result.ok, result.lines()
    assert (result.mints, result.signatures) == (0, 1)


def test_a_broken_chain_is_a_gap_and_the_altered_record_is_not_believed(logs: Logs) -> None:
    jti = str(uuid.uuid4())
    logs.mint(jti, [1, 2])
    logs.signed_by(jti, [1, 2])
    gateway, paths = logs.write()
    # Signer 2's record is edited in place (its subject), without fixing the hash.
    text = paths[2].read_text().replace(SUBJECT, "spiffe://prod.test/ns/shop/sa/other")
    paths[2].write_text(text)

    result = reconcile(
        [read_source("gateway", gateway)],
        {i: read_source(f"signer {i}", p) for i, p in paths.items()},
    )

    assert kinds(result) == [("chain_broken", ""), ("mint_not_signed", jti)]
    assert result.gaps[0].log == "signer 2"
    assert "hash_mismatch" in result.gaps[0].detail


def test_a_record_of_a_known_event_without_its_fields_is_a_gap(logs: Logs) -> None:
    logs.gateway.append(("mint", {"jti": "x"}))  # no signers

    result = logs.reconcile()

    assert kinds(result) == [("malformed_record", "")]
    assert "seq 1: a mint record without well-typed jti and signers" in result.gaps[0].detail


@pytest.mark.parametrize("text", ["1", "=x", "0=x", "a=x", "1="])
def test_a_malformed_signer_argument_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not ID=PATH"):
        parse_signer_argument(text)


# --- the command ---------------------------------------------------------------------------------


def command(gateway: Path, signers: Mapping[int, Path], *extra: str) -> list[str]:
    argv = ["audit", "reconcile", "--gateway", str(gateway), *extra]
    for identifier, path in signers.items():
        argv += ["--signer", f"{identifier}={path}"]
    return argv


def test_the_command_exits_0_when_reconciled_and_1_naming_each_gap(
    logs: Logs, capsys: pytest.CaptureFixture[str]
) -> None:
    jti = str(uuid.uuid4())
    logs.mint(jti, [1, 2])
    logs.signed_by(jti, [1, 2])
    gateway, paths = logs.write()
    assert main(command(gateway, paths)) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("RECONCILED: 1 mint(s)")

    hidden = str(uuid.uuid4())
    logs.signed_by(hidden, [2, 3])
    gateway, paths = logs.write()
    assert main(command(gateway, paths)) == 1
    out = capsys.readouterr().out
    assert f"GAP signature_without_mint {hidden} [every gateway log]" in out
    assert out.splitlines()[-1].startswith("NOT RECONCILED")


def test_the_command_writes_one_json_document(
    logs: Logs, capsys: pytest.CaptureFixture[str]
) -> None:
    jti = str(uuid.uuid4())
    logs.mint(jti, [1, 2])
    gateway, paths = logs.write()

    assert main(command(gateway, paths, "--json")) == 1

    document = json.loads(capsys.readouterr().out)
    assert document["reconciled"] is False
    assert document["mints"] == 1
    assert [g["kind"] for g in document["gaps"]] == [GapKind.MINT_NOT_SIGNED] * 2
    assert [log["chain_ok"] for log in document["logs"]] == [True] * 4
    assert NoteKind.SIGNER_LOG_MISSING not in [n["kind"] for n in document["notes"]]


@pytest.mark.parametrize(
    "make_argv",
    [
        lambda g, s: command(g, {1: s[1]}, "--signer", "1=" + str(s[1])),  # a signer twice
        lambda g, s: command(g, {1: s[1]}, "--signer", "one=x"),
        lambda g, s: command(g.with_name("missing.jsonl"), s),
    ],
)
def test_the_command_exits_2_when_it_cannot_run(
    logs: Logs, capsys: pytest.CaptureFixture[str], make_argv: object
) -> None:
    gateway, paths = logs.write()
    argv = make_argv(gateway, paths)  # type: ignore[operator]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("extauthz audit: ")
