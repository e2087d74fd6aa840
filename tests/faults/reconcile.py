"""After a fault: every audit chain verifies, and no acknowledged record is missing.

Held against each other:
- every audit log (each gateway replica's, each signer's) verifies as a hash chain;
- every token a caller received has the `mint` record of the replica that minted it (the record
  is written before the token is released: nothing reaches a caller unrecorded);
- every `mint` record names the signers whose shares made the token, and each of them has the
  `sign_request` record of that token (the request id is the token's jti);
- a token that t signers signed (a `sign_request` and no refusal at each) but that no gateway
  recorded is named: it was never released (a caller holding it would fail the check above), and
  the fault runs expect it only where a gateway could not write its audit log.

Traffic may still be flowing: the gateways' logs are read first, then the signers' (whose records
of a token precede its gateway's record), and a signature made in the last `in_flight_seconds`
before the gateways' logs were read is not held against them yet.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from signer.audit import token_ref, verify_log


@dataclass
class Reconciliation:
    chains: dict[str, str] = field(default_factory=dict)  # log -> "" when it verifies
    records: dict[str, int] = field(default_factory=dict)
    mints: int = 0
    released: int = 0  # distinct tokens callers received
    unrecorded_tokens: list[str] = field(default_factory=list)  # token refs
    missing_at_signers: list[str] = field(default_factory=list)  # "jti at signer N"
    signed_not_recorded: list[str] = field(default_factory=list)  # jtis
    # Signed by t signers, and a gateway recorded giving up on them (`mint_abandoned`: a deadline
    # passed, the quorum was lost, Envoy cancelled the Check). Not released: checked above.
    abandoned: list[str] = field(default_factory=list)  # jtis

    def problems(self, *, explained: Iterable[str] = ()) -> list[str]:
        """What does not reconcile; `explained`: signed-but-unrecorded jtis already accounted for
        (a gateway that could not write its audit log refused to release them)."""
        found = [f"{name}: {problem}" for name, problem in self.chains.items() if problem]
        found += [
            f"token {ref} reached a caller without a mint record" for ref in self.unrecorded_tokens
        ]
        found += [f"mint {entry}: no sign_request record" for entry in self.missing_at_signers]
        known = set(explained)
        found += [
            f"jti {jti} was signed by t signers but recorded by no gateway"
            for jti in self.signed_not_recorded
            if jti not in known
        ]
        return found

    def summary(self) -> dict[str, object]:
        return {
            "chains_ok": sum(1 for problem in self.chains.values() if not problem),
            "chains": len(self.chains),
            "mint_records": self.mints,
            "tokens_released": self.released,
            "released_unrecorded": len(self.unrecorded_tokens),
            "mints_missing_at_signers": len(self.missing_at_signers),
            "signed_not_recorded": len(self.signed_not_recorded),
            "signed_then_abandoned": len(self.abandoned),
        }


def _records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _ts(record: dict[str, object]) -> float:
    return datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00")).timestamp()


def _data(record: dict[str, object]) -> dict[str, object]:
    data = record["data"]
    assert isinstance(data, dict)
    return data


def reconcile(
    gateway_logs: Mapping[str, Path],
    signer_logs: Mapping[int, Path],
    released_tokens: Iterable[str],
    threshold: int = 2,
    in_flight_seconds: float = 2.0,
) -> Reconciliation:
    result = Reconciliation()
    released = {token_ref(token) for token in released_tokens}
    read_at = time.time()
    minted: dict[str, list[int]] = {}  # jti -> signers named
    refs: set[str] = set()
    gave_up: set[str] = set()
    for path in gateway_logs.values():
        for record in _records(path):
            if record["event"] == "mint":
                data = _data(record)
                minted[str(data["jti"])] = [int(s) for s in data["signers"]]  # type: ignore[attr-defined]
                refs.add(str(data["token_ref"]))
            elif record["event"] == "mint_abandoned":
                gave_up.add(str(_data(record)["jti"]))
    result.mints = len(minted)

    requested: dict[int, set[str]] = {}  # every sign_request's id, by signer
    signed: dict[int, set[str]] = {}  # those made before the gateways' logs were read
    refused: dict[int, set[str]] = {}
    for identifier, path in signer_logs.items():
        requested[identifier], signed[identifier], refused[identifier] = set(), set(), set()
        for record in _records(path):
            request_id = str(_data(record).get("request_id", ""))
            if record["event"] == "sign_request":
                requested[identifier].add(request_id)
                if _ts(record) < read_at - in_flight_seconds:
                    signed[identifier].add(request_id)
            elif record["event"] == "refusal":
                refused[identifier].add(request_id)

    for jti, signers in sorted(minted.items()):
        for identifier in signers:
            if jti not in requested.get(identifier, set()):
                result.missing_at_signers.append(f"{jti} at signer {identifier}")

    result.released = len(released)
    result.unrecorded_tokens = sorted(released - refs)

    # Signed by t signers without a refusal at either, yet recorded by no gateway. (Attempts that
    # a failing peer cut short leave one signer's record only; those are not signatures.)
    counts: dict[str, int] = {}
    for identifier, ids in signed.items():
        for request_id in ids - refused[identifier]:
            counts[request_id] = counts.get(request_id, 0) + 1
    unrecorded = sorted(
        request_id
        for request_id, count in counts.items()
        if count >= threshold and request_id not in minted and not request_id.startswith("endorse-")
    )
    result.signed_not_recorded = [jti for jti in unrecorded if jti not in gave_up]
    result.abandoned = [jti for jti in unrecorded if jti in gave_up]

    for name, path in {
        **gateway_logs,
        **{f"signer-{i}": p for i, p in signer_logs.items()},
    }.items():
        verified = verify_log(path) if path.exists() else None
        result.chains[name] = "" if verified is None or verified.ok else str(verified)
        result.records[name] = 0 if verified is None else verified.records
    return result
