"""The faults of `make test-faults`: one at a time, under steady traffic, each with the outcome
expected of keymint written down before it was measured (`Scenario.expected`) and checked after
(`Scenario.holds`, which returns what did not hold).

Each scenario marks its moments on the wall clock: `fault` (the fault is injected), `recover` (the
fault is undone: a restart begins, a disk is freed), `recovered` (what was restarted is ready).
From the traffic's outcomes between them come the figures: failed requests by status and reason,
latency while degraded, and the time to recover (from `recovered` to the last failed request).
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from extauthz.dev.github import SigningKey
from tests.faults.stack import (
    MAX_STALENESS_SECONDS,
    SIGN_TIMEOUT_SECONDS,
    SYNC_SECONDS,
    UNCLEAN,
    FaultStack,
)
from tests.faults.traffic import Outcome, Traffic, failures_by_status, latency_ms

BASELINE_SECONDS = 3.0
BACK_IN_USE_SECONDS = 1.0  # a restarted (or resumed) signer is used again within this of ready
# A signature attempt that waits on a hung signer (KEYMINT_SIGNER_ATTEMPT_TIMEOUT_SECONDS, 0.5 s),
# then succeeds with others; the rest of the request on top.
DEGRADED_P99_SECONDS = 1.5
JWKS_FETCH_COOLDOWN_SECONDS = 60.0  # extauthz.identity.JwksSettings.fetch_cooldown_seconds
BACKOFF_MAX_SECONDS = 30.0  # signer.coordinator.CoordinatorSettings.backoff_max


@dataclass
class Run:
    """What a scenario acts on, and what it notes while it acts."""

    stack: FaultStack
    traffic: Traffic
    marks: dict[str, float] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)

    def mark(self, name: str, at: float | None = None) -> float:
        self.marks[name] = time.time() if at is None else at
        return self.marks[name]

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class Measured:
    scenario: Scenario
    marks: dict[str, float]
    notes: dict[str, object]
    outcomes: list[Outcome]

    def between(self, start: str, end: str) -> list[Outcome]:
        return [o for o in self.outcomes if self.marks[start] <= o.at < self.marks[end]]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.failed]

    @property
    def degraded(self) -> list[Outcome]:
        return self.between("fault", "recover")

    @property
    def recover_seconds(self) -> float:
        """From `recovered` to the last failed request sent after it (0: none failed after)."""
        later = [o.at for o in self.failed if o.at >= self.marks["recovered"]]
        return round(max(later) - self.marks["recovered"], 2) if later else 0.0

    def figures(self) -> dict[str, object]:
        degraded = latency_ms(self.degraded)
        return {
            "requests": len(self.outcomes),
            "failed": failures_by_status(self.outcomes),
            "failed_while_degraded": failures_by_status(self.degraded),
            "degraded_seconds": round(self.marks["recover"] - self.marks["fault"], 2),
            "degraded_p50_ms": degraded["p50_ms"],
            "degraded_p99_ms": degraded["p99_ms"],
            "recover_s": self.recover_seconds,
            **self.notes,
        }


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str
    expected: str
    act: Callable[[Run], None]
    holds: Callable[[Measured], list[str]]
    needs_root: bool = False
    # A gateway that cannot record a token it had signed refuses to release it (or is killed
    # before it can): the signers' logs then hold signatures no gateway recorded, which the audit
    # check accepts for this one.
    leaves_unrecorded_signatures: bool = False


# --- what the checks read -------------------------------------------------------------------------


def _records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _ts(record: dict[str, object]) -> float:
    return datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00")).timestamp()


def back_in_use(run: Run, signer: int, ready: float, timeout: float = 10.0) -> dict[str, float]:
    """Seconds from `ready` until every replica's coordinator has `signer` in service again: up,
    with commitments from it to sign with (`keymint_signer_up` 1, `keymint_commitment_pool` above
    0 on its /metrics, polled every 50 ms); -1 for a replica that did not within `timeout`. The
    first signatures with it are noted too (`first_signature`)."""
    seconds: dict[str, float] = {}
    replicas = range(1, len(run.stack.gateways) + 1)
    up = f'keymint_signer_up{{signer="{signer}"}}'
    pool = f'keymint_commitment_pool{{signer="{signer}"}}'
    while time.time() < ready + timeout and len(seconds) < len(replicas):
        for replica in replicas:
            name = f"replica {replica}"
            if name not in seconds and (
                gateway_metric(run.stack, replica, up) == 1
                and gateway_metric(run.stack, replica, pool) > 0
            ):
                seconds[name] = round(time.time() - ready, 2)
        time.sleep(0.05)
    for replica in replicas:
        seconds.setdefault(f"replica {replica}", -1.0)
    run.notes.setdefault("first_signature_s", {})
    first = run.notes["first_signature_s"]
    assert isinstance(first, dict)
    first[f"signer {signer}"] = first_signature(run, signer, ready)
    return seconds


def first_signature(run: Run, signer: int, ready: float, timeout: float = 5.0) -> dict[str, float]:
    """Seconds from `ready` to the first token each replica minted with `signer`'s share (from
    the replicas' audit logs); -1 for none within `timeout`. Which two signers sign is the
    coordinator's choice (fastest first), so this is when it was picked, not when it could be."""
    seconds: dict[str, float] = {}
    replicas = range(1, len(run.stack.gateways) + 1)
    while time.time() < ready + timeout and len(seconds) < len(replicas):
        for replica in replicas:
            if f"replica {replica}" in seconds:
                continue
            for record in _records(run.stack.gateway_audit(replica)):
                data = record["data"]
                assert isinstance(data, dict)
                if record["event"] == "mint" and signer in data["signers"] and _ts(record) >= ready:
                    seconds[f"replica {replica}"] = round(_ts(record) - ready, 2)
                    break
        time.sleep(0.1)
    for replica in replicas:
        seconds.setdefault(f"replica {replica}", -1.0)
    return seconds


def gateway_metric(stack: FaultStack, replica: int, sample: str) -> float:
    """One sample (`name{labels}` as Prometheus prints it) of a replica's /metrics; 0 if absent."""
    url = f"http://127.0.0.1:{stack.gateways[replica - 1].http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def refusals(stack: FaultStack, signer: int, rule: str, since: float) -> int:
    return sum(
        1
        for record in _records(stack.signer_audit(signer))
        if record["event"] == "refusal"
        and isinstance(record["data"], dict)
        and record["data"].get("rule") == rule
        and _ts(record) >= since - 120  # a skewed signer's records are timed by its own clock
    )


# --- checks shared by several scenarios -----------------------------------------------------------


def no_failures(measured: Measured) -> list[str]:
    failed = failures_by_status(measured.outcomes)
    return [f"requests failed: {failed}"] if failed else []


def back_within(measured: Measured, note: str, bound: float) -> list[str]:
    seconds = measured.notes.get(note)
    assert isinstance(seconds, dict)
    late = {r: s for r, s in seconds.items() if s < 0 or s > bound}
    return [f"{note}: {late} (bound {bound} s)"] if late else []


def only(measured: Measured, allowed: frozenset[str], outcomes: Sequence[Outcome]) -> list[str]:
    other = {label: n for label, n in failures_by_status(outcomes).items() if label not in allowed}
    return [f"failures other than {sorted(allowed)}: {other}"] if other else []


def none_after(measured: Measured, mark: str, grace: float) -> list[str]:
    late = [o for o in measured.failed if o.at >= measured.marks[mark] + grace]
    if not late:
        return []
    return [f"{len(late)} request(s) failed later than {grace} s after {mark}: {late[0].label}"]


def seen_unaffected(measured: Measured) -> list[str]:
    failed = [o for o in measured.failed if o.kind == "seen"]
    return [f"{len(failed)} seen-credential request(s) failed"] if failed else []


# --- the scenarios ------------------------------------------------------------------------------


def _kill_restart_signer(run: Run) -> None:
    cluster = run.stack.cluster
    run.wait(BASELINE_SECONDS)
    run.mark("fault")
    cluster.signers[1].kill()
    run.wait(6)
    run.mark("recover")
    ready = run.mark("recovered", run.stack.start_signer(1))
    run.notes["back_in_use_s"] = back_in_use(run, 1, ready)
    # With signer 1 back there is a spare again: signer 2 may die too.
    run.wait(1)
    run.mark("spare_fault")
    cluster.signers[2].kill()
    run.wait(4)
    ready = run.mark("spare_recovered", run.stack.start_signer(2))
    run.notes["spare_back_in_use_s"] = back_in_use(run, 2, ready)
    run.wait(2)


def _kill_restart_signer_holds(measured: Measured) -> list[str]:
    return (
        no_failures(measured)
        + back_within(measured, "back_in_use_s", BACK_IN_USE_SECONDS)
        + back_within(measured, "spare_back_in_use_s", BACK_IN_USE_SECONDS)
    )


def _sigstop_signer(run: Run) -> None:
    signer = run.stack.cluster.signers[2]
    run.wait(BASELINE_SECONDS)
    run.mark("fault")
    signer.hang()
    run.wait(10)
    run.mark("recover")
    signer.resume()
    ready = run.mark("recovered")
    run.notes["back_in_use_s"] = back_in_use(run, 2, ready)
    run.wait(2)


def _sigstop_holds(measured: Measured) -> list[str]:
    p99 = latency_ms(measured.degraded)["p99_ms"] / 1000
    slow = (
        [f"p99 while degraded {p99:.2f} s > {DEGRADED_P99_SECONDS} s"]
        if p99 > DEGRADED_P99_SECONDS
        else []
    )
    return (
        no_failures(measured) + back_within(measured, "back_in_use_s", BACK_IN_USE_SECONDS) + slow
    )


def _wrong_shares(run: Run) -> None:
    sample = 'keymint_signer_faults_total{reason="invalid_share",signer="3"}'
    before = sum(gateway_metric(run.stack, r, sample) for r in (1, 2))
    run.wait(BASELINE_SECONDS)
    run.mark("fault")
    run.stack.restart_signer(3, module="tests.signer.faulty_signer")
    run.wait(10)
    run.mark("recover")
    ready = run.mark("recovered", run.stack.restart_signer(3))
    run.notes["back_in_use_s"] = back_in_use(run, 3, ready)
    run.notes["invalid_shares_named"] = (
        sum(gateway_metric(run.stack, r, sample) for r in (1, 2)) - before
    )
    run.wait(2)


def _wrong_shares_holds(measured: Measured) -> list[str]:
    named = measured.notes["invalid_shares_named"]
    unnamed = [] if isinstance(named, float) and named > 0 else ["no invalid share was named"]
    return (
        no_failures(measured)
        + back_within(measured, "back_in_use_s", BACK_IN_USE_SECONDS)
        + unnamed
    )


def _clock_ahead(run: Run) -> None:
    run.wait(BASELINE_SECONDS)
    started = run.mark("fault")
    run.stack.restart_signer(3, clock_offset_seconds=90)
    run.wait(10)
    run.notes["iat_skew_refusals"] = refusals(run.stack, 3, "guard:iat_skew", started)
    run.mark("recover")
    ready = run.mark("recovered", run.stack.restart_signer(3))
    run.notes["back_in_use_s"] = back_in_use(run, 3, ready)
    run.wait(2)


def _clock_ahead_holds(measured: Measured) -> list[str]:
    refused = measured.notes["iat_skew_refusals"]
    unnamed = (
        [] if isinstance(refused, int) and refused > 0 else ["signer 3 never refused iat_skew"]
    )
    return (
        no_failures(measured)
        + back_within(measured, "back_in_use_s", BACK_IN_USE_SECONDS)
        + unnamed
    )


NO_QUORUM = frozenset({"503 no_signing_quorum", "503 temporarily_unavailable/no_signing_quorum"})


def _two_signers_down(run: Run) -> None:
    cluster = run.stack.cluster
    run.wait(BASELINE_SECONDS)
    run.mark("fault")
    cluster.signers[1].kill()
    cluster.signers[2].kill()
    run.wait(8)
    run.mark("recover")
    run.stack.start_signer(1)
    run.mark("recovered", run.stack.start_signer(2))
    run.wait(4)


def _two_signers_down_holds(measured: Measured) -> list[str]:
    problems = only(measured, NO_QUORUM, measured.outcomes) + seen_unaffected(measured)
    slow = [o for o in measured.failed if o.seconds > SIGN_TIMEOUT_SECONDS + 0.25]
    if slow:
        problems.append(
            f"{len(slow)} denial(s) after the deadline: {max(o.seconds for o in slow):.2f} s"
        )
    if not [o for o in measured.degraded if o.label in NO_QUORUM]:
        problems.append("no new mint was refused below quorum")
    return problems + none_after(measured, "recovered", 1.0)


def _kill_restart_gateway(run: Run) -> None:
    run.wait(BASELINE_SECONDS)
    run.mark("fault")
    run.stack.gateways[0].kill()
    run.wait(5)
    run.mark("recover")
    run.mark("recovered", run.stack.start_gateway(1))
    run.wait(5)
    mints = [
        r
        for r in _records(run.stack.gateway_audit(1))
        if r["event"] == "mint" and _ts(r) >= run.marks["recovered"]
    ]
    run.notes["restarted_replica_mints"] = len(mints)


def _kill_restart_gateway_holds(measured: Measured) -> list[str]:
    problems = no_failures(measured)
    if measured.notes["restarted_replica_mints"] == 0:
        problems.append("the restarted replica minted nothing")
    return problems


STALE = frozenset(
    {"503 shared_state_unavailable", "503 temporarily_unavailable/shared_state_unavailable"}
)


def _redis_stop_start(run: Run) -> None:
    run.wait(BASELINE_SECONDS)
    run.mark("fault")
    run.stack.redis.stop()
    run.wait(6)
    run.mark("recover")
    run.mark("recovered", run.stack.redis_start())
    run.wait(4)


def _redis_holds(measured: Measured) -> list[str]:
    problems = only(measured, STALE, measured.outcomes)
    bound = measured.marks["fault"] + MAX_STALENESS_SECONDS + SYNC_SECONDS + 0.5
    served = [
        o for o in measured.outcomes if not o.failed and bound <= o.at < measured.marks["recovered"]
    ]
    if served:
        problems.append(f"{len(served)} request(s) served past the staleness bound")
    return problems + none_after(measured, "recovered", 1.0)


UNKNOWN_KEY = frozenset(
    {
        "401 unknown_kid",
        "403 signer_refused",
        "400 invalid_request/unknown_kid",
        "400 invalid_request/signer_refused",
    }
)


def _jwks_failing_then_rotating(run: Run) -> None:
    issuer = run.stack.issuer
    run.wait(BASELINE_SECONDS)
    run.mark("fault")
    issuer.down = True
    run.wait(8)
    run.mark("recover")
    issuer.rotate(SigningKey.generate("key-2"), keep_old=True)
    issuer.down = False
    run.mark("recovered")
    # New tokens are signed with key-2 now: wait until 5 s pass without a failure.
    deadline = time.time() + JWKS_FETCH_COOLDOWN_SECONDS + 15
    while time.time() < deadline:
        run.wait(1)
        recent = run.traffic.since(time.time() - 5)
        if time.time() - run.marks["recovered"] > 6 and not any(o.failed for o in recent):
            break
    run.notes["jwks_fetches"] = issuer.jwks_fetches


def _jwks_holds(measured: Measured) -> list[str]:
    problems = only(measured, frozenset(), measured.degraded)
    problems += only(measured, UNKNOWN_KEY, measured.outcomes)
    if measured.recover_seconds > JWKS_FETCH_COOLDOWN_SECONDS + 5:
        problems.append(f"new-key tokens refused for {measured.recover_seconds} s")
    return problems + seen_unaffected(measured)


AUDIT_UNAVAILABLE = frozenset(
    {"503 audit_unavailable", "503 temporarily_unavailable/audit_unavailable"}
)


def _gateway_audit_full(run: Run) -> None:
    disk = run.stack.disks["gateway-1"]
    run.wait(BASELINE_SECONDS)
    run.mark("fault")
    run.notes["filler_bytes"] = disk.fill()
    run.wait(6)
    run.mark("recover")
    disk.free()
    run.mark("recovered")
    run.wait(4)


def _gateway_audit_full_holds(measured: Measured) -> list[str]:
    problems = only(measured, AUDIT_UNAVAILABLE, measured.outcomes) + seen_unaffected(measured)
    if not [o for o in measured.degraded if o.label in AUDIT_UNAVAILABLE]:
        problems.append("no mint was refused while the audit disk was full")
    return problems + none_after(measured, "recovered", 1.0)


def _signer_audit_full(run: Run) -> None:
    disk = run.stack.disks["signer-3"]
    log_offset = len(run.stack.cluster.signers[3].log.read_text(errors="replace"))
    run.wait(BASELINE_SECONDS)
    run.mark("fault")
    run.notes["filler_bytes"] = disk.fill()
    run.wait(8)
    run.mark("recover")
    disk.free()
    ready = run.mark("recovered")
    # Its commitments never needed the disk, so the coordinator holds some whenever its back-off
    # ends: only a signature with its share says it is back.
    run.notes["signing_again_s"] = first_signature(run, 3, ready, timeout=BACKOFF_MAX_SECONDS + 5)
    log = run.stack.cluster.signers[3].log.read_text(errors="replace")
    run.notes["shares_withheld"] = log[log_offset:].count("its record could not be written")
    run.wait(2)


def _signer_audit_full_holds(measured: Measured) -> list[str]:
    withheld = measured.notes["shares_withheld"]
    quiet = (
        [] if isinstance(withheld, int) and withheld > 0 else ["signer 3 never withheld a share"]
    )
    return (
        no_failures(measured)
        + back_within(measured, "signing_again_s", BACKOFF_MAX_SECONDS + 1)
        + quiet
    )


def _gateway_audit_read_only(run: Run) -> None:
    disk = run.stack.disks["gateway-1"]
    gateway = run.stack.gateways[0]
    run.wait(BASELINE_SECONDS)
    run.mark("fault")
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGTERM)
    gateway.process.wait(timeout=15)
    disk.read_only()
    offset = gateway.log.stat().st_size
    try:
        gateway.start(timeout=30)
        run.notes["started_read_only"] = "yes: it should have refused"
    except RuntimeError:
        assert gateway.process is not None
        code = gateway.process.wait()
        lines = gateway.log.read_bytes()[offset:].decode(errors="replace").splitlines()
        said = [line for line in lines if line.startswith("extauthz serve:")]
        run.notes["started_read_only"] = f"no: exit {code}: {said[-1] if said else lines[-1:]}"
        run.notes["unclean_lines_at_refusal"] = [line for line in lines if UNCLEAN.search(line)]
    run.wait(3)
    run.mark("recover")
    disk.writable()
    run.mark("recovered", run.stack.start_gateway(1))
    run.wait(4)


def _gateway_audit_read_only_holds(measured: Measured) -> list[str]:
    problems = no_failures(measured)
    refused = str(measured.notes["started_read_only"])
    # Named either by the settings check at start (`not writable here`) or, if the file system
    # turned read-only after it, by opening the log (`Read-only file system`).
    names_the_log = "KEYMINT_AUDIT_LOG" in refused and "not writable" in refused
    if not (
        refused.startswith("no: exit 2") and (names_the_log or "Read-only file system" in refused)
    ):
        problems.append(
            f"a replica with a read-only audit log started or failed otherwise: {refused}"
        )
    if measured.notes.get("unclean_lines_at_refusal"):
        problems.append(
            f"its refusal left errors in its log: {measured.notes['unclean_lines_at_refusal']}"
        )
    return problems


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "signer_killed",
        "kill -9 signer 1; restart it after 6 s; then kill -9 signer 2 for 4 s and restart it",
        "zero failed requests (2 of 3 signers hold a quorum); each restarted signer is used by "
        "every replica within 1 s of being ready, so signer 1 is the spare that carries signer 2's "
        "outage",
        _kill_restart_signer,
        _kill_restart_signer_holds,
    ),
    Scenario(
        "signer_stopped",
        "SIGSTOP signer 2 for 10 s, then SIGCONT",
        "zero failed requests; a mint that tries the hung signer waits one attempt (0.5 s) and "
        "completes with the other two, so p99 while degraded stays under 1.5 s; used again within "
        "1 s of SIGCONT",
        _sigstop_signer,
        _sigstop_holds,
    ),
    Scenario(
        "signer_wrong_shares",
        "signer 3 replaced by one whose signature shares are wrong (tests/signer/faulty_signer.py) "
        "for 10 s, then by an honest one",
        "zero failed requests: each wrong share is caught by verification, its signer named and "
        "set aside (longer each time), and the signature completed with the other two; the honest "
        "restart is used within 1 s",
        _wrong_shares,
        _wrong_shares_holds,
    ),
    Scenario(
        "signer_clock_ahead",
        "signer 3 restarted with its clock 90 s ahead (libfaketime) for 10 s, then with the right "
        "time",
        "zero failed requests: its guard refuses every token (iat_skew: iat is 90 s before its "
        "now, 60 s allowed) and the other two sign; used again within 1 s of the fixed restart",
        _clock_ahead,
        _clock_ahead_holds,
    ),
    Scenario(
        "two_signers_down",
        "kill -9 signers 1 and 2 for 8 s (below the 2-of-3 quorum), then restart both",
        "new mints (CI tokens, /token) fail with keymint's 503 no_signing_quorum within the 2 s "
        "sign deadline; seen credentials keep being served from the caches; no failure 1 s after "
        "both are ready",
        _two_signers_down,
        _two_signers_down_holds,
    ),
    Scenario(
        "gateway_killed",
        "kill -9 gateway replica 1; restart it after 5 s",
        "zero failed requests: Envoy asks the other replica whatever the killed one did not "
        "answer (a Check or /token reset, refused, or UNAVAILABLE) and ejects it at its first "
        "refused connection; the restarted replica mints again",
        _kill_restart_gateway,
        _kill_restart_gateway_holds,
        # Killed between the signers' shares and its own record, a gateway leaves a signature
        # nobody recorded and nobody received (every released token is checked against a record).
        leaves_unrecorded_signatures=True,
    ),
    Scenario(
        "redis_stopped",
        "stop Redis (SIGTERM) for 6 s, then start it again (same port, append-only file)",
        f"every replica serves from memory for at most the staleness bound "
        f"({MAX_STALENESS_SECONDS:g} s) plus one poll, then answers every request 503 "
        "shared_state_unavailable (revocations cannot be confirmed); nothing is served past the "
        "bound; service resumes within 1 s of Redis being ready",
        _redis_stop_start,
        _redis_holds,
    ),
    Scenario(
        "gateway_audit_disk_full",
        "replica 1's audit log file system filled up (tmpfs, ENOSPC) for 6 s, then freed",
        "replica 1 answers new mints with 503 audit_unavailable and releases no token it could not "
        "record (its share of CI tokens and /token); seen credentials are still served; replica 2 "
        "is unaffected; mints succeed again within 1 s of space returning",
        _gateway_audit_full,
        _gateway_audit_full_holds,
        needs_root=True,
        leaves_unrecorded_signatures=True,
    ),
    Scenario(
        "signer_audit_disk_full",
        "signer 3's audit log file system filled up for 8 s, then freed",
        "zero failed requests: signer 3 releases no share it cannot record (it answers "
        "refusing_service) and is set aside with back-off; every replica signs with it again at "
        f"most one back-off (up to {BACKOFF_MAX_SECONDS:g} s) after space returns",
        _signer_audit_full,
        _signer_audit_full_holds,
        needs_root=True,
    ),
    Scenario(
        "gateway_audit_read_only",
        "replica 1 stopped (SIGTERM), its audit file system remounted read-only, started again: "
        "it must refuse; after 3 s made writable and started",
        "the replica refuses to start (exit 2, naming the read-only audit log, nothing else in its "
        "log); zero failed requests: Envoy retries on the other replica whatever the stopping one "
        "refuses, and the writable restart serves again",
        _gateway_audit_read_only,
        _gateway_audit_read_only_holds,
        needs_root=True,
    ),
    Scenario(
        "oidc_jwks_failing_then_rotating",
        "the OIDC issuer's discovery and JWKS answer 503 for 8 s; then it comes back having "
        "rotated to a new signing key",
        "zero failures while it fails (keys are cached for the issuer's max-age, 300 s); after the "
        "rotation, tokens under the new key are refused (401 unknown_kid, or 403 signer_refused "
        "from signers that have not re-fetched) until each process re-fetches the JWKS, which it "
        f"does at most once per {JWKS_FETCH_COOLDOWN_SECONDS:g} s: so within "
        f"{JWKS_FETCH_COOLDOWN_SECONDS:g} s; never a 5xx, never an allow under an unknown key",
        _jwks_failing_then_rotating,
        _jwks_holds,
    ),
)

QUICK = ("signer_killed", "two_signers_down", "gateway_killed")


def by_name(names: Sequence[str]) -> list[Scenario]:
    known = {s.name: s for s in SCENARIOS}
    return [known[name] for name in names]
