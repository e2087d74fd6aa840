"""After a fault: the product's own reconciliation, `extauthz audit reconcile --json`, run as a
process over every audit log of the stack (as an operator runs it), and held against what callers
received.

The command does the reconciling: every chain verifies, every gateway `mint` is in the logs of the
signers it names, every signature in the signers' logs is in a gateway's log, no jti or nonce
commitment serves twice (its module docstring, extauthz/tools/audit_reconcile.py, has the list).
What it cannot know, and this module adds:
- every token a caller received has a gateway `mint` record (the record is written before the
  token is released: nothing reaches a caller unrecorded). So no token a caller holds can be one
  of the signatures no gateway recorded, below;
- which of the command's gaps a fault run expects. Only signatures that t signers made and no
  gateway recorded, and only these:
  - `signature_abandoned`: a gateway recorded giving up on the mint (`mint_abandoned`: a deadline
    passed, the quorum was lost, Envoy cancelled the Check); no caller received the token;
  - `signature_without_mint` while the mint may still be in flight: traffic is running and the
    first share was recorded less than `IN_FLIGHT_SECONDS` before the command started (the
    command reads the gateways' logs before the signers', so a signature made after the gateways'
    logs were read shows here). Never at the end, when everything has stopped;
  - `signature_without_mint` made within the window of a fault that leaves them (a gateway that
    cannot write its audit log refuses to release the token, or is killed before its record).
  Every other gap kind (`jti_reused`, `commitment_reused`, `mint_not_signed`, `mint_mismatch`,
  `chain_broken`, `malformed_record`, ...) fails the run, and so do the notes saying something
  could not be checked (a signer's log not given, a share record naming no commitment).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from signer.audit import token_ref
from tests.faults.stack import SIGN_TIMEOUT_SECONDS

REPO = Path(__file__).resolve().parents[2]
# A mint gives up at its deadline, which runs from before its first share; twice that covers
# writing the gateway's record on a loaded machine. What this defers is held again at the end.
IN_FLIGHT_SECONDS = 2 * SIGN_TIMEOUT_SECONDS
UNRECORDED = "signature_without_mint"
ABANDONED = "signature_abandoned"
# Notes that say nothing was left unchecked: a mint that failed half-way, or a retried attempt.
HARMLESS_NOTES = frozenset({"unfinished_attempt", "retried_attempt"})
SHOWN_DETAIL = 300

Window = tuple[float, float]  # wall-clock seconds, start and end


@dataclass(frozen=True)
class Audit:
    """One reconciliation of the stack's logs, and what the fault run makes of it."""

    document: Mapping[str, Any]  # what `extauthz audit reconcile --json` printed
    released: int  # distinct tokens callers received
    released_unrecorded: tuple[str, ...]  # their token refs, with no gateway `mint` record
    signed_at: Mapping[str, float]  # a signature gap's jti -> when its first share was recorded
    in_flight_since: float | None  # gaps signed after this may be in flight; None: none may

    @property
    def mints(self) -> int:
        return int(self.document["mints"])

    @property
    def chains(self) -> dict[str, bool]:
        return {str(log["log"]): bool(log["chain_ok"]) for log in self.document["logs"]}

    def _gaps(self, kind: str) -> list[str]:
        return [str(g["subject"]) for g in self.document["gaps"] if g["kind"] == kind]

    def in_flight(self) -> list[str]:
        if self.in_flight_since is None:
            return []
        since = self.in_flight_since
        return [jti for jti in self._gaps(UNRECORDED) if self.signed_at.get(jti, 0.0) >= since]

    def unrecorded_within(self, windows: Iterable[Window]) -> list[str]:
        """The `signature_without_mint` jtis whose first share was recorded within a window."""
        spans = list(windows)
        return [
            jti
            for jti in self._gaps(UNRECORDED)
            if any(start <= self.signed_at.get(jti, -1.0) <= end for start, end in spans)
        ]

    def problems(self, *, explained: Iterable[Window] = ()) -> list[str]:
        """What does not reconcile; `explained`: the windows of faults that leave signatures no
        gateway recorded (`Scenario.leaves_unrecorded_signatures`)."""
        found = [
            f"token {ref} reached a caller without a mint record"
            for ref in self.released_unrecorded
        ]
        expected = {*self.in_flight(), *self.unrecorded_within(explained)}
        for gap in self.document["gaps"]:
            if gap["kind"] == ABANDONED or (
                gap["kind"] == UNRECORDED and gap["subject"] in expected
            ):
                continue
            found.append(_finding("gap", gap))
        found += [
            _finding("note", note)
            for note in self.document["notes"]
            if note["kind"] not in HARMLESS_NOTES
        ]
        return found

    def summary(self, *, explained: Iterable[Window] = ()) -> dict[str, object]:
        chains = self.chains
        gaps = Counter(str(g["kind"]) for g in self.document["gaps"])
        return {
            "reconciled": bool(self.document["reconciled"]),
            "chains_ok": sum(chains.values()),
            "chains": len(chains),
            "mints": self.mints,
            "signatures": int(self.document["signatures"]),
            "tokens_released": self.released,
            "released_unrecorded": len(self.released_unrecorded),
            "gaps": dict(sorted(gaps.items())),
            "unrecorded_explained": len(self.unrecorded_within(explained)),
            "unrecorded_in_flight": len(self.in_flight()),
            "notes": dict(sorted(Counter(str(n["kind"]) for n in self.document["notes"]).items())),
        }


def _finding(what: str, finding: Mapping[str, Any]) -> str:
    subject = f" {finding['subject']}" if finding["subject"] else ""
    text = f"{what} {finding['kind']}{subject} [{finding['log']}]: {finding['detail']}"
    return text[:SHOWN_DETAIL]


def reconcile_command(
    gateway_logs: Sequence[Path], signer_logs: Mapping[int, Path]
) -> tuple[int, dict[str, Any]]:
    """`extauthz audit reconcile --json` in its own process; (exit code, its JSON). Raises if
    the command could not run (exit 2: a log unreadable)."""
    argv = [sys.executable, "-m", "extauthz.cli", "audit", "reconcile", "--json"]
    for path in gateway_logs:
        argv += ["--gateway", str(path)]
    for identifier, path in sorted(signer_logs.items()):
        argv += ["--signer", f"{identifier}={path}"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"extauthz audit reconcile: exit {done.returncode}: {done.stderr}")
    document: dict[str, Any] = json.loads(done.stdout)
    if document["reconciled"] is not (done.returncode == 0):
        raise RuntimeError(f"extauthz audit reconcile: exit {done.returncode} but {document}")
    return done.returncode, document


def reconcile(
    gateway_logs: Sequence[Path],
    signer_logs: Mapping[int, Path],
    released_tokens: Iterable[str],
    *,
    traffic_running: bool,
    clock: Callable[[], float] = time.time,
) -> Audit:
    """Run the command over the logs and hold its answer against the tokens callers received
    (taken before the command runs: each was recorded before it was released)."""
    released = {token_ref(token) for token in released_tokens}
    started = clock()
    _, document = reconcile_command(gateway_logs, signer_logs)
    signature_gaps = {
        str(g["subject"]) for g in document["gaps"] if g["kind"] in (UNRECORDED, ABANDONED)
    }
    return Audit(
        document=document,
        released=len(released),
        released_unrecorded=tuple(sorted(released - _minted_refs(gateway_logs))),
        signed_at=_first_share(signer_logs, signature_gaps),
        in_flight_since=started - IN_FLIGHT_SECONDS if traffic_running else None,
    )


def _records(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a log that may still be written to (a line being written is not)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1] if line.strip()]


def _minted_refs(gateway_logs: Sequence[Path]) -> set[str]:
    return {
        str(record["data"]["token_ref"])
        for path in gateway_logs
        for record in _records(path)
        if record["event"] == "mint"
    }


def _first_share(signer_logs: Mapping[int, Path], jtis: set[str]) -> dict[str, float]:
    """When the first `sign_request` of each jti was recorded, by the earliest clock (a signer
    whose clock a fault moved ahead records later times)."""
    first: dict[str, float] = {}
    for path in signer_logs.values():
        for record in _records(path):
            data = record["data"]
            if record["event"] != "sign_request" or not isinstance(data, dict):
                continue
            jti = data.get("request_id")
            if jti in jtis:
                at = datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00")).timestamp()
                first[jti] = min(at, first.get(jti, at))
    return first
