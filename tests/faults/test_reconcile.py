"""What the fault run makes of `extauthz audit reconcile`'s answer (tests/faults/reconcile.py), on
logs written record by record in production's shapes with a fixed clock: the gaps a fault or a
mint in flight may leave pass, only where and when they may; every other gap fails the run, and so
does a released token without its record."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from signer.audit import AuditLog, token_ref
from tests.faults.reconcile import IN_FLIGHT_SECONDS, Window, reconcile

EARLIER = 1_900_000_000.0
NOW = EARLIER + 600.0  # when the command runs
RECENT = NOW - IN_FLIGHT_SECONDS / 2  # a share recorded while its mint may be in flight
FAULT = (EARLIER - 10.0, EARLIER + 10.0)  # the window of a fault that leaves signatures unrecorded


@dataclass
class Logs:
    """One gateway log and three signer logs; each entry (when, event, data)."""

    gateway: list[tuple[float, str, dict[str, object]]] = field(default_factory=list)
    signers: dict[int, list[tuple[float, str, dict[str, object]]]] = field(
        default_factory=lambda: {1: [], 2: [], 3: []}
    )
    released: list[str] = field(default_factory=list)

    def mint(self, jti: str, signers: Iterable[int], at: float = EARLIER) -> None:
        token = f"token-of-{jti}"
        data: dict[str, object] = {
            "subject": "repo:acme/app",
            "audience": "https://deploy.internal",
            "jti": jti,
            "token_ref": token_ref(token),
            "signers": sorted(signers),
            "expires_at": 1_900_000_900,
        }
        self.gateway.append((at, "mint", data))
        self.released.append(token)

    def sign(
        self, jti: str, signers: Iterable[int], at: float = EARLIER, commitment: str | None = ""
    ) -> None:
        members = sorted(signers)
        for signer in members:
            data: dict[str, object] = {
                "request_id": jti,
                "message_sha256": hashlib.sha256(jti.encode()).hexdigest(),
                "signers": members,
                "claims": {
                    "jti": jti,
                    "sub": "repo:acme/app",
                    "aud": "https://deploy.internal",
                    "exp": 1_900_000_900,
                },
            }
            if commitment is not None:
                data["commitment_sha256"] = commitment or uuid.uuid4().hex * 2
            self.signers[signer].append((at, "sign_request", data))

    def write(self, directory: Path) -> tuple[list[Path], dict[int, Path]]:
        gateway = directory / "gateway.jsonl"
        _write(gateway, self.gateway)
        signers = {i: directory / f"signer-{i}.jsonl" for i in self.signers}
        for i, path in signers.items():
            _write(path, self.signers[i])
        return [gateway], signers


def _write(path: Path, entries: list[tuple[float, str, dict[str, object]]]) -> None:
    moments = iter([at for at, _, _ in entries])
    with AuditLog(path, clock=lambda: next(moments)) as log:
        for _, event, data in entries:
            log.append(event, data)


def honest(logs: Logs) -> None:
    logs.mint("jti-1", [1, 2])
    logs.sign("jti-1", [1, 2])


def signed_then(at: float) -> Callable[[Logs], None]:
    def build(logs: Logs) -> None:
        honest(logs)
        logs.sign("jti-2", [2, 3], at=at)

    return build


def abandoned(logs: Logs) -> None:
    honest(logs)
    logs.sign("jti-2", [2, 3])
    logs.gateway.append((EARLIER, "mint_abandoned", {"jti": "jti-2", "why": "deadline exceeded"}))


def released_unrecorded(logs: Logs) -> None:
    honest(logs)
    logs.released.append("a token no gateway recorded")


def minted_twice(logs: Logs) -> None:
    honest(logs)
    logs.mint("jti-1", [1, 2])


def commitment_reused(logs: Logs) -> None:
    honest(logs)
    logs.mint("jti-2", [1, 3])
    logs.sign("jti-2", [1, 3], commitment="c" * 64)
    logs.mint("jti-3", [1, 3])
    logs.sign("jti-3", [1, 3], commitment="c" * 64)


def mint_not_signed(logs: Logs) -> None:
    honest(logs)
    logs.mint("jti-2", [2, 3], at=RECENT)  # in flight or not, a mint's shares precede it


def no_commitment(logs: Logs) -> None:
    logs.mint("jti-1", [1, 2])
    logs.sign("jti-1", [1, 2], commitment=None)


def retried(logs: Logs) -> None:
    honest(logs)
    logs.sign("jti-1", [1, 3])  # an attempt completed too, the coordinator had moved on


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Logs], None]
    expected: tuple[str, ...]  # the start of each problem
    traffic_running: bool = True
    explained: tuple[Window, ...] = ()


CASES = (
    Case("honest mints reconcile", honest, ()),
    Case(
        "a signature no gateway recorded fails",
        signed_then(EARLIER),
        ("gap signature_without_mint jti-2",),
    ),
    Case("... unless its mint may be in flight", signed_then(RECENT), ()),
    Case(
        "... which it may not once everything stopped",
        signed_then(RECENT),
        ("gap signature_without_mint jti-2",),
        traffic_running=False,
    ),
    Case(
        "... or it was signed during a fault that leaves them",
        signed_then(EARLIER),
        (),
        False,
        (FAULT,),
    ),
    Case(
        "... but only during it",
        signed_then(FAULT[1] + 1),
        ("gap signature_without_mint jti-2",),
        traffic_running=False,
        explained=(FAULT,),
    ),
    Case("a signature whose mint the gateway gave up on passes", abandoned, (), False),
    Case(
        "a released token without its mint record fails",
        released_unrecorded,
        (f"token {token_ref('a token no gateway recorded')} reached a caller",),
    ),
    Case("one jti minted twice fails", minted_twice, ("gap jti_reused jti-1",)),
    Case(
        "a nonce commitment used twice fails",
        commitment_reused,
        ("gap commitment_reused jti-3",) * 2,
    ),
    Case(
        "a mint its signers never signed fails", mint_not_signed, ("gap mint_not_signed jti-2",) * 2
    ),
    Case(
        "a share that names no commitment fails: nonce reuse could not be ruled out",
        no_commitment,
        ("note no_commitment_recorded",) * 2,
    ),
    Case("a retried attempt passes", retried, ()),
)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_fault_run_allows_only_the_gaps_it_expects(case: Case, tmp_path: Path) -> None:
    logs = Logs()
    case.build(logs)
    gateways, signers = logs.write(tmp_path)

    audit = reconcile(
        gateways, signers, logs.released, traffic_running=case.traffic_running, clock=lambda: NOW
    )
    problems = audit.problems(explained=case.explained)

    assert len(problems) == len(case.expected), problems
    for problem, start in zip(sorted(problems), sorted(case.expected), strict=True):
        assert problem.startswith(start), problems
    assert list(audit.chains.values()) == [True] * 4


def summary_of(build: Callable[[Logs], None], tmp_path: Path) -> Mapping[str, object]:
    logs = Logs()
    build(logs)
    gateways, signers = logs.write(tmp_path)
    audit = reconcile(gateways, signers, logs.released, traffic_running=True, clock=lambda: NOW)
    return audit.summary(explained=[FAULT])


def test_the_summary_counts_what_the_command_found(tmp_path: Path) -> None:
    summary = summary_of(signed_then(RECENT), tmp_path)

    assert summary == {
        "reconciled": False,
        "chains_ok": 4,
        "chains": 4,
        "mints": 1,
        "signatures": 2,
        "tokens_released": 1,
        "released_unrecorded": 0,
        "gaps": {"signature_without_mint": 1},
        "unrecorded_explained": 0,
        "unrecorded_in_flight": 1,
        "notes": {},
    }
