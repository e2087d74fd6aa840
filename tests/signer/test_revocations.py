"""The signer's own revocation list: read at start, re-read on change, never lost to a typo."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import pytest

from signer.revocations import RevocationFile, RevocationFileError, parse_revocations

SUBJECT = "spiffe://prod.test/ns/shop/sa/web"


class Clocks:
    def __init__(self) -> None:
        self.wall = 1_900_000_000.0
        self.monotonic = 0.0


def write(path: Path, subjects: dict[str, float], *, bump: int = 0) -> None:
    path.write_text(json.dumps({"subjects": subjects, "jtis": {}}))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump * 1_000_000_000))


def revocations(path: Path, clocks: Clocks) -> RevocationFile:
    return RevocationFile(
        path, clock=lambda: clocks.wall, monotonic=lambda: clocks.monotonic, poll_seconds=1.0
    )


def test_a_subject_is_revoked_until_the_time_it_names(tmp_path: Path) -> None:
    clocks = Clocks()
    path = tmp_path / "revocations.json"
    write(path, {SUBJECT: clocks.wall + 60})
    listed = revocations(path, clocks)

    assert listed.subject_revoked(SUBJECT)
    assert not listed.subject_revoked("spiffe://prod.test/ns/shop/sa/other")
    clocks.wall += 60
    assert not listed.subject_revoked(SUBJECT)


def test_an_edit_is_seen_at_the_next_poll(tmp_path: Path) -> None:
    clocks = Clocks()
    path = tmp_path / "revocations.json"
    write(path, {})
    listed = revocations(path, clocks)
    write(path, {SUBJECT: clocks.wall + 60}, bump=1)

    assert not listed.subject_revoked(SUBJECT)  # not polled yet
    clocks.monotonic += 1.0
    assert listed.subject_revoked(SUBJECT)


def test_a_broken_edit_keeps_the_list_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clocks = Clocks()
    path = tmp_path / "revocations.json"
    write(path, {SUBJECT: clocks.wall + 60})
    listed = revocations(path, clocks)
    path.write_text('{"subjects": {"x": ')
    clocks.monotonic += 1.0

    with caplog.at_level(logging.ERROR):
        assert listed.subject_revoked(SUBJECT)
    assert "the one in force stays" in caplog.text


def test_a_missing_file_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RevocationFileError, match="cannot read"):
        RevocationFile(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[]", "must be a JSON object"),
        (b"{", "is not JSON"),
        (b'{"subjects": {}, "users": {}}', "unknown members"),
        (b'{"subjects": ["a"]}', "subjects must map"),
        (b'{"subjects": {"a": "tomorrow"}}', "not a unix time"),
        (b'{"subjects": {"a": true}}', "not a unix time"),
        (b'{"jtis": {"a": null}}', "not a unix time"),
        (b'{"subjects": {"a": 1e999}}', "not a finite unix time"),
    ],
)
def test_a_malformed_list_names_what_is_wrong(content: bytes, problem: str) -> None:
    with pytest.raises(RevocationFileError, match=problem):
        parse_revocations(content, Path("revocations.json"))


# --- what a signer learns from the gateways' Redis ---------------------------------------------


def test_learned_revocations_only_grow_and_survive_a_restart(tmp_path: Path) -> None:
    import time

    from signer.revocations import LearnedRevocations

    path = tmp_path / "learned-revocations.json"
    learned = LearnedRevocations(path)
    now = time.time()
    assert learned.merge({"spiffe://prod.test/a": now + 60, "gone": now - 1}) == 1
    # A later answer without the entry, or with an earlier time, lifts nothing.
    assert learned.merge({}) == 0
    assert learned.merge({"spiffe://prod.test/a": now + 1}) == 0
    assert learned.subject_revoked("spiffe://prod.test/a")
    assert not learned.subject_revoked("gone")
    assert LearnedRevocations(path).subject_revoked("spiffe://prod.test/a")  # a restart
    # Its file is in the operators' shape, so it can be read as a revocation file too.
    assert "spiffe://prod.test/a" in parse_revocations(path.read_bytes(), path)
    full = LearnedRevocations(tmp_path / "full.json", max_entries=1)
    assert full.merge({"one": now + 60}) == 1
    assert full.merge({"two": now + 60}) == 0  # a flood is refused, logged, not held


def test_a_signer_follows_redis_and_a_redis_that_forgets_lifts_nothing(tmp_path: Path) -> None:
    import asyncio
    import time

    import redis as redis_sync

    from signer.redisconn import RedisSettings, connect
    from signer.revocations import LearnedRevocations, RedisRevocationFollower
    from tests.helpers.redis_server import RedisServer

    server = RedisServer(tmp_path).start()
    admin = redis_sync.Redis(host="127.0.0.1", port=server.port)

    async def run() -> float:
        settings = RedisSettings.from_env({"KEYMINT_REDIS_URL": server.url})
        assert settings is not None
        learned = LearnedRevocations(tmp_path / "learned.json")
        client = connect(settings)
        follower = RedisRevocationFollower(client, learned, where=settings.where, poll_seconds=0.2)
        task = asyncio.create_task(follower.run())
        await asyncio.sleep(0.3)
        try:
            started = time.monotonic()
            # What a gateway does when it revokes (extauthz.server.state.redis_store).
            until = time.time() + 60
            admin.zadd("keymint:revoked:subject", {"spiffe://prod.test/x": until})
            admin.set("keymint:revoked:version", "v1")
            admin.publish(
                "keymint:events",
                json.dumps({"kind": "subject", "value": "spiffe://prod.test/x", "until": until}),
            )
            while not learned.subject_revoked("spiffe://prod.test/x"):
                assert time.monotonic() - started < 1.0
                await asyncio.sleep(0.005)
            elapsed = time.monotonic() - started
            admin.flushall()  # Redis forgets, or lies
            admin.set("keymint:revoked:version", "v2")
            await asyncio.sleep(0.5)
            assert learned.subject_revoked("spiffe://prod.test/x")
            return elapsed
        finally:
            task.cancel()
            await client.aclose()

    try:
        assert asyncio.run(run()) < 1.0
    finally:
        server.stop()


def test_a_burst_of_announcements_is_in_force_at_once_and_written_once(tmp_path: Path) -> None:
    """Each announcement is in force as soon as it is read; the file, the whole of it per write,
    is written once for the burst (a write per announcement stalled signing), and what is still
    unwritten when the follower stops is written then."""
    import asyncio
    import time

    import redis as redis_sync

    from signer.redisconn import RedisSettings, connect
    from signer.revocations import SAVE_DELAY_SECONDS, LearnedRevocations, RedisRevocationFollower
    from tests.helpers.redis_server import RedisServer

    server = RedisServer(tmp_path).start()
    admin = redis_sync.Redis(host="127.0.0.1", port=server.port)
    path = tmp_path / "learned.json"
    until = time.time() + 600

    def announce(*subjects: str) -> None:
        with admin.pipeline(transaction=False) as pipe:
            for subject in subjects:
                document = {"kind": "subject", "value": subject, "until": until}
                pipe.publish("keymint:events", json.dumps(document))
            pipe.execute()

    async def run() -> int:
        settings = RedisSettings.from_env({"KEYMINT_REDIS_URL": server.url})
        assert settings is not None
        learned = LearnedRevocations(path)
        writes: list[float] = []
        save = learned.save

        def counted() -> None:
            writes.append(time.monotonic())
            save()

        learned.save = counted  # type: ignore[method-assign]
        client = connect(settings)
        follower = RedisRevocationFollower(client, learned, where=settings.where, poll_seconds=0.2)
        task = asyncio.create_task(follower.run())
        await asyncio.sleep(0.3)
        burst = [f"spiffe://prod.test/burst/{i}" for i in range(300)]
        try:
            announce(*burst)
            deadline = time.monotonic() + 5
            while not all(learned.subject_revoked(s) for s in burst):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.005)
            await asyncio.sleep(SAVE_DELAY_SECONDS * 3)
            assert all(LearnedRevocations(path).subject_revoked(s) for s in burst)
            written = len(writes)
            announce("spiffe://prod.test/last")
            while not learned.subject_revoked("spiffe://prod.test/last"):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.001)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.aclose()
        assert LearnedRevocations(path).subject_revoked("spiffe://prod.test/last")
        return written

    try:
        assert 1 <= asyncio.run(run()) <= 3  # 300 announcements: one write, or a few if split
    finally:
        server.stop()


def test_a_signer_that_cannot_reach_redis_keeps_refusing_and_learns_again_when_it_answers(
    tmp_path: Path,
) -> None:
    import asyncio
    import time

    import redis as redis_sync

    from signer.redisconn import RedisSettings, connect
    from signer.revocations import LearnedRevocations, RedisRevocationFollower
    from signer.server import load_revocations
    from tests.helpers.redis_server import RedisServer

    server = RedisServer(tmp_path).start()  # no persistence: it comes back empty
    operators = tmp_path / "revocations.json"
    write(operators, {"spiffe://prod.test/by-operators": time.time() + 3600})

    def revoke_in_redis(subject: str) -> None:
        """What a gateway does when it revokes (extauthz.server.state.redis_store)."""
        admin = redis_sync.Redis(host="127.0.0.1", port=server.port)
        until = time.time() + 3600
        admin.zadd("keymint:revoked:subject", {subject: until})
        admin.set("keymint:revoked:version", subject)
        admin.publish(
            "keymint:events", json.dumps({"kind": "subject", "value": subject, "until": until})
        )
        admin.close()

    async def run() -> None:
        settings = RedisSettings.from_env({"KEYMINT_REDIS_URL": server.url})
        assert settings is not None
        learned = LearnedRevocations(tmp_path / "learned.json")
        client = connect(settings)
        follower = RedisRevocationFollower(client, learned, where=settings.where, poll_seconds=0.1)
        # What the signer's guard reads: its operators' file and what Redis taught it.
        revocations = load_revocations(operators, learned)
        assert revocations is not None
        task = asyncio.create_task(follower.run())

        async def learned_of(subject: str) -> None:
            started = time.monotonic()
            while not revocations.subject_revoked(subject):
                assert time.monotonic() - started < 10, f"{subject} never learned"
                await asyncio.sleep(0.02)

        try:
            revoke_in_redis("spiffe://prod.test/before")
            await learned_of("spiffe://prod.test/before")
            server.kill()
            assert not await follower.poll_once()  # unreachable: said, not raised
            await asyncio.sleep(0.5)  # several polls fail
            assert not task.done()
            # It keeps refusing what it learned and what its operators' file names; a subject
            # no one revoked is still signed for (the control).
            assert revocations.subject_revoked("spiffe://prod.test/before")
            assert revocations.subject_revoked("spiffe://prod.test/by-operators")
            assert not revocations.subject_revoked("spiffe://prod.test/never")
            # Redis answers again, empty: what it revokes now is learned, what it forgot stays.
            server.start()
            revoke_in_redis("spiffe://prod.test/after")
            await learned_of("spiffe://prod.test/after")
            assert await follower.poll_once()
            assert revocations.subject_revoked("spiffe://prod.test/before")
        finally:
            task.cancel()
            await client.aclose()

    try:
        asyncio.run(run())
    finally:
        server.stop()


def test_a_learned_file_that_cannot_be_written_is_a_warning_and_the_revocation_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio
    import time

    from signer.revocations import SAVE_DELAY_SECONDS, LearnedRevocations, RedisRevocationFollower

    learned = LearnedRevocations(tmp_path / "learned.json")

    def disk_full() -> None:
        raise OSError(28, "No space left on device")

    learned.save = disk_full  # type: ignore[method-assign]
    follower = RedisRevocationFollower(None, learned, where="redis://test")  # type: ignore[arg-type]
    announcement = {"kind": "subject", "value": SUBJECT, "until": time.time() + 60}

    async def run() -> None:
        follower._apply(json.dumps(announcement))
        assert learned.subject_revoked(SUBJECT)
        await asyncio.sleep(SAVE_DELAY_SECONDS * 3)

    with caplog.at_level(logging.WARNING, logger="signer.revocations"):
        asyncio.run(run())
    assert learned.subject_revoked(SUBJECT)
    assert "learned revocations not written to" in caplog.text
    assert "No space left on device" in caplog.text
