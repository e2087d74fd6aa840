"""Many replicas, one truth: revocations, rate limits and keys shared through Redis, across three
real gateway processes behind one real Envoy, with three real signers following Redis too.

The tests run in file order on one stack: the last one kills Redis.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

from extauthz.dev.calls import check_request
from signer.coordinator import SigningRefused
from signer.token import kid_for
from tests.e2e.replies import minted
from tests.replicas.stack import (
    MAX_STALENESS_SECONDS,
    PUBLISH_LEAD_SECONDS,
    RATE_BURST,
    RATE_PER_SECOND,
    REPLICAS,
    SYNC_SECONDS,
    ReplicasStack,
    wait_until,
)

REVOCATION_BOUND_SECONDS = 1.0
NUMBERS = range(1, REPLICAS + 1)  # replicas are numbered from 1: "gateway-1" is replica 1


def outcome(response: CheckResponse) -> tuple[int, str]:
    """(200, "ok") for an allow, else the HTTP status and keymint's reason."""
    if response.status.code == 0:
        return 200, "ok"
    body = json.loads(response.denied_response.body or "{}")
    return response.denied_response.status.code, str(body.get("error", ""))


def test_a_revocation_through_one_replica_is_refused_by_every_replica_and_signer_within_1s(
    stack: ReplicasStack,
) -> None:
    svid = stack.svid("/ns/shop/sa/revoked-web")
    subject = "spiffe://prod.test/ns/shop/sa/revoked-web"
    request = check_request(certificate=svid, route_key="orders")
    # Every replica serves the caller, from its hot cache after the first Check.
    for replica in NUMBERS:
        for _ in range(2):
            assert outcome(stack.check(replica, request)) == (200, "ok")
    rogue = stack.rogue(svid)
    try:
        kid = active_kid(stack)
        for pair in rogue.PAIRS:  # the control: before the revocation, every pair signs
            signed = rogue.sign(pair, kid)
            assert not isinstance(signed, BaseException), signed

        started = time.monotonic()
        status, answer = stack.revoke(1, subject=subject, until=time.time() + 3600)
        assert status == 200, answer
        refused_after: dict[str, float] = {}
        pending = {f"replica {r}": r for r in NUMBERS}
        while pending and time.monotonic() - started < 5:
            for name, replica in list(pending.items()):
                if outcome(stack.check(replica, request)) == (403, "subject_revoked"):
                    refused_after[name] = time.monotonic() - started
                    del pending[name]
        # The signers: asked directly with the coordinator's credentials (as a gateway that
        # ignored the revocation would), every pair refuses, each signer citing the rule.
        refusals: dict[int, str] = {}
        for pair in rogue.PAIRS:
            result = rogue.sign(pair, kid)
            assert isinstance(result, SigningRefused), result
            refusals.update(result.refusals)
        refused_after["signers 1, 2 and 3"] = time.monotonic() - started
    finally:
        rogue.close()
    assert not pending, f"still serving a revoked subject: {sorted(pending)}"
    assert set(refusals) == {1, 2, 3}
    assert all("subject_revoked" in rule for rule in refusals.values()), refusals
    print(f"seconds from the revocation to refusal: {refused_after}")
    assert max(refused_after.values()) <= REVOCATION_BOUND_SECONDS, refused_after
    # Through Envoy, whichever replica answers.
    for _ in range(2 * REPLICAS):
        reply = stack.front_call("GET", "/orders/v1/orders", certificate=svid)
        assert reply.status == 403, reply.body


def active_kid(stack: ReplicasStack, replica: int = 1) -> str:
    status, _, body = stack.http(replica, "GET", "/admin/keys")
    assert status == 200, body
    kid: str = json.loads(body)["active"]
    return kid


def test_a_key_published_and_activated_through_other_replicas_is_served_identically_by_all(
    stack: ReplicasStack,
) -> None:
    new_kid = kid_for(stack.second_key)
    old_kid = active_kid(stack)
    status, _, body = stack.http(2, "POST", "/admin/keys/publish", {"kid": new_kid})
    assert status == 200, body
    time.sleep(PUBLISH_LEAD_SECONDS)
    # Activated through another replica than the one that published: it learned the key there.
    status, _, body = stack.http(3, "POST", "/admin/keys/activate")
    assert status == 200, body

    def documents() -> list[tuple[str, str, bytes, bytes]]:
        served = []
        for replica in NUMBERS:
            jwks_status, jwks_headers, jwks = stack.http(replica, "GET", "/.well-known/jwks.json")
            chain_status, chain_headers, chain = stack.http(
                replica, "GET", "/.well-known/keymint-endorsements.json"
            )
            assert (jwks_status, chain_status) == (200, 200)
            served.append((jwks_headers["ETag"], chain_headers["ETag"], jwks, chain))
        return served

    wait_until(lambda: len(set(documents())) == 1, timeout=1.0)
    ((jwks_etag, _, jwks, chain),) = set(documents())
    assert [key["kid"] for key in json.loads(jwks)["keys"]] == [new_kid, old_kid]
    assert len(json.loads(chain)["endorsements"]) == 1
    assert {active_kid(stack, r) for r in NUMBERS} == {new_kid}
    # Every replica mints with it, and Envoy serves the same JWKS whichever replica answers.
    svid = stack.svid("/ns/shop/sa/after-rotation")
    for replica in NUMBERS:
        response = stack.check(replica, check_request(certificate=svid, route_key="orders"))
        assert outcome(response) == (200, "ok")
    etags = {
        stack.front_call("GET", "/.well-known/jwks.json").headers["etag"] for _ in range(REPLICAS)
    }
    assert etags == {jwks_etag}


def test_the_revocation_and_the_key_ring_survive_kill_9_of_every_replica(
    stack: ReplicasStack,
) -> None:
    # Its own revocation, made through one replica: nothing here depends on an earlier test.
    subject = "spiffe://prod.test/ns/shop/sa/revoked-before-kill-9"
    status, answer = stack.revoke(3, subject=subject, until=time.time() + 3600)
    assert status == 200, answer
    kid = active_kid(stack)
    stack.kill_replicas()
    stack.start_replicas()
    svid = stack.svid("/ns/shop/sa/revoked-before-kill-9")
    for replica in NUMBERS:
        _, _, body = stack.http(replica, "GET", "/admin/revocations")
        assert subject in json.loads(body)["subjects"], body
        request = check_request(certificate=svid, route_key="orders")
        assert outcome(stack.check(replica, request)) == (403, "subject_revoked")
        assert active_kid(stack, replica) == kid


def test_a_rate_limit_holds_across_replicas(stack: ReplicasStack) -> None:
    # One CI workflow, a fresh OIDC token for every request (as a job fetches one per step),
    # spread over the three replicas: they share one bucket.
    workflow = "octo-org/octo-repo/.github/workflows/deploy.yml@refs/heads/main"
    accepted: Counter[int] = Counter()
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < 3.0:
        token = stack.issuer.mint({"jti": str(uuid.uuid4()), "workflow_ref": workflow})
        replica = sent % REPLICAS + 1
        status, _ = outcome(stack.check(replica, check_request(bearer=token, route_key="deploy")))
        statuses[status] += 1
        if status == 200:
            accepted[replica] += 1
        sent += 1
    elapsed = time.monotonic() - started
    allowed = RATE_BURST + RATE_PER_SECOND * elapsed
    print(f"{sent} sent in {elapsed:.2f} s: {dict(statuses)}; accepted {dict(accepted)}")
    assert set(statuses) == {200, 429}, statuses
    assert sum(accepted.values()) <= allowed
    # Every replica took part, and together they accepted at least the burst.
    assert len(accepted) == REPLICAS
    assert sum(accepted.values()) >= RATE_BURST


def test_a_rate_limit_holds_across_replicas_taking_requests_at_once(stack: ReplicasStack) -> None:
    # As above, but one thread per replica sends at the same time, so the replicas take from
    # the shared bucket concurrently. Tokens are minted before the clock starts: the threads
    # spend their time sending, not signing.
    workflow = "octo-org/octo-repo/.github/workflows/release.yml@refs/heads/main"
    tokens = {
        replica: [
            stack.issuer.mint({"jti": str(uuid.uuid4()), "workflow_ref": workflow})
            for _ in range(150)
        ]
        for replica in NUMBERS
    }
    accepted: Counter[int] = Counter()
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    go = threading.Barrier(REPLICAS + 1)

    def send(replica: int) -> None:
        go.wait()
        deadline = time.monotonic() + 3.0
        for token in tokens[replica]:
            if time.monotonic() >= deadline:
                break
            request = check_request(bearer=token, route_key="deploy")
            status, _ = outcome(stack.check(replica, request))
            with lock:
                statuses[status] += 1
                accepted[replica] += status == 200

    senders = [threading.Thread(target=send, args=(r,), daemon=True) for r in NUMBERS]
    for sender in senders:
        sender.start()
    go.wait()
    started = time.monotonic()
    for sender in senders:
        sender.join(timeout=60)
    elapsed = time.monotonic() - started
    allowed = RATE_BURST + RATE_PER_SECOND * elapsed
    print(
        f"{sum(statuses.values())} sent at once in {elapsed:.2f} s: {dict(statuses)}; "
        f"accepted {dict(accepted)}"
    )
    assert not any(sender.is_alive() for sender in senders)
    assert set(statuses) == {200, 429}, statuses
    assert sum(accepted.values()) <= allowed
    assert sum(accepted.values()) >= RATE_BURST


def test_redis_killed_under_load_refuses_past_the_bound_and_heals_when_it_returns(
    stack: ReplicasStack,
) -> None:
    goods = [stack.svid(f"/ns/shop/sa/good-{i}") for i in range(5)]  # each well under the limit
    good = goods[0]
    revoked = stack.svid("/ns/shop/sa/revoked-before-the-outage")
    status, _ = stack.revoke(
        1,
        subject="spiffe://prod.test/ns/shop/sa/revoked-before-the-outage",
        until=time.time() + 600,
    )
    assert status == 200
    for replica in NUMBERS:
        assert (
            outcome(stack.check(replica, check_request(certificate=good, route_key="orders")))[0]
            == 200
        )
    late = stack.svid("/ns/shop/sa/revoked-during-the-outage")
    late_revoked = threading.Event()  # the late caller joins the load once it is revoked

    # Load: the callers, every replica in turn, from a thread, each Check's sending and answer
    # times kept: (sent, answered, replica, caller, status, reason).
    answers: list[tuple[float, float, int, str, int, str]] = []
    stop = threading.Event()

    def load() -> None:
        turn = 0
        while not stop.is_set():
            callers = [("good", goods[turn % len(goods)]), ("revoked", revoked)]
            if late_revoked.is_set():
                callers.append(("late", late))
            replica = turn % REPLICAS + 1
            for name, certificate in callers:
                request = check_request(certificate=certificate, route_key="orders")
                sent = time.monotonic()
                status, reason = outcome(stack.check(replica, request))
                answers.append((sent, time.monotonic(), replica, name, status, reason))
            turn += 1
            time.sleep(0.05)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        time.sleep(0.5)
        killed = time.monotonic()
        stack.redis.kill()
        # During the outage a revocation reaches only the replica it was made on, which says so.
        time.sleep(0.5)
        late_subject = "spiffe://prod.test/ns/shop/sa/revoked-during-the-outage"
        status, answer = stack.revoke(2, subject=late_subject, until=time.time() + 600)
        revoked_at = time.monotonic()
        late_revoked.set()
        assert status == 503, answer
        time.sleep(MAX_STALENESS_SECONDS + 1.5)
        restarted = time.monotonic()
        stack.redis.start()
        back = time.monotonic()  # Redis answers again
        probe = check_request(certificate=stack.svid("/ns/shop/sa/probe"), route_key="orders")
        healed_after = wait_until(
            lambda: all(outcome(stack.check(r, probe))[0] != 503 for r in NUMBERS),
            timeout=10,
            interval=0.1,
        )
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join(timeout=30)
    print(f"served again {healed_after:.2f} s after Redis came back")
    lates = [a for a in answers if a[3] == "late"]
    served_late = [(round(a[0] - revoked_at, 2), a[2]) for a in lates if a[4] == 200]
    print(f"the caller revoked during the outage served (seconds after, replica): {served_late}")

    # The revoked caller was never served, before, during or after the outage.
    assert [a for a in answers if a[3] == "revoked" and a[4] == 200] == []
    # Past the bound (staleness plus one poll, from the kill) nothing at all was served, and
    # what was refused was refused as the outage it was.
    bound = killed + MAX_STALENESS_SECONDS + SYNC_SECONDS + 0.1
    during = [a for a in answers if bound < a[0] and a[1] < restarted]
    assert during, "no load during the outage"
    assert {(a[4], a[5]) for a in during} == {(503, "shared_state_unavailable")}
    assert any(a[3] == "good" and a[4] == 200 and a[0] > restarted for a in answers)
    # The caller revoked during the outage: the replica that took the revocation refused it from
    # the first Check after its answer. The others could not hear of it (the control: they still
    # served it) until the bound stopped them serving anything; once Redis answered again, the
    # replica that took it wrote it there at its first poll and the others read it at their next,
    # so none served it later than two polls after Redis answered.
    assert lates, "the late caller was not part of the load"
    assert [a for a in lates if a[2] == 2 and a[4] == 200] == []
    assert any(a[2] != 2 and a[4] == 200 for a in lates)
    assert [a for a in lates if a[4] == 200 and a[0] > back + 2 * SYNC_SECONDS + 0.1] == []
    assert any(a[0] > back for a in lates)
    # After Redis returned, service resumed without a restart; the revocation made during the
    # outage was pushed to Redis by its replica and holds everywhere.
    for replica in NUMBERS:
        wait_until(
            lambda r=replica: (
                outcome(stack.check(r, check_request(certificate=late, route_key="orders")))
                == (403, "subject_revoked")
            ),
            timeout=2,
        )
    reply = stack.front_call(
        "GET", "/orders/v1/orders", certificate=stack.svid("/ns/shop/sa/after")
    )
    assert minted(reply)
