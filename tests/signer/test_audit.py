"""The hash-chained audit log: every kind of tampering is found where it happened."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from signer.audit import (
    GENESIS_HASH,
    MAX_DEPTH,
    AsyncAuditLog,
    AuditError,
    AuditLog,
    ProblemKind,
    VerifyResult,
    canonical_json,
    token_ref,
    verify_log,
)


def ticking_clock(start: float = 1_700_000_000.0) -> Callable[[], float]:
    now = [start]

    def clock() -> float:
        now[0] += 0.25
        return now[0]

    return clock


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def written(log_path: Path) -> Path:
    """A log of 10 records, closed."""
    with AuditLog(log_path, clock=ticking_clock()) as log:
        for i in range(10):
            log.append("mint", {"n": i, "aud": "https://orders.example.com"})
    return log_path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def rewrite(path: Path, new_lines: list[bytes]) -> None:
    path.write_bytes(b"".join(new_lines))


def rehashed(line: bytes, **changes: object) -> bytes:
    """A record edited by someone who also recomputed its own hash."""
    record = json.loads(line)
    record.update(changes)
    del record["hash"]
    record["hash"] = hashlib.sha256(canonical_json(record)).hexdigest()
    return canonical_json(record) + b"\n"


def only_problem(result: VerifyResult) -> tuple[int, int | None, ProblemKind]:
    assert result.first_problem is not None, result
    first = result.first_problem
    return first.line, first.seq, first.kind


def test_records_chain_from_genesis_and_verify(log_path: Path) -> None:
    with AuditLog(log_path, clock=ticking_clock()) as log:
        records = [log.append("mint", {"i": i}) for i in range(300)]
    assert records[0].seq == 1
    assert records[0].prev == GENESIS_HASH
    assert all(b.prev == a.hash for a, b in itertools.pairwise(records))
    assert records[0].ts == "2023-11-14T22:13:20.250000Z"
    result = verify_log(log_path)
    assert result.ok
    assert (result.records, result.last_seq, result.last_hash) == (300, 300, records[-1].hash)


def test_lines_are_canonical_json_with_the_record_hash(log_path: Path) -> None:
    with AuditLog(log_path, clock=lambda: 0.0) as log:
        record = log.append("deny", {"reason": "no_matching_binding", "b": [1, "é"]})
    line = lines(log_path)[0]
    assert line == record.line()
    assert line.startswith(b'{"data":{"b":[1,"\xc3\xa9"],"reason":"no_matching_binding"},')
    body = json.loads(line)
    stored = body.pop("hash")
    assert stored == hashlib.sha256(canonical_json(body)).hexdigest()


def test_edited_field_is_found_on_its_line(written: Path) -> None:
    content = lines(written)
    content[4] = content[4].replace(b'"n":4', b'"n":5')
    rewrite(written, content)
    result = verify_log(written)
    assert only_problem(result) == (5, 5, ProblemKind.HASH_MISMATCH)
    assert len(result.problems) == 1


def test_result_reads_well(written: Path) -> None:
    assert str(verify_log(written)).startswith("OK: 10 records, last seq 10, head ")
    content = lines(written)
    del content[2]
    rewrite(written, content)
    text = str(verify_log(written))
    assert text.startswith("BROKEN: 2 problem(s)")
    assert "\n  line 3 (seq 4): seq_mismatch: seq 4 where 3 was expected" in text


def test_edit_with_recomputed_hash_breaks_the_next_link(written: Path) -> None:
    content = lines(written)
    content[4] = rehashed(content[4], data={"n": 999})
    rewrite(written, content)
    assert only_problem(verify_log(written)) == (6, 6, ProblemKind.PREV_MISMATCH)


def test_deleted_line_is_found(written: Path) -> None:
    content = lines(written)
    del content[4]
    rewrite(written, content)
    result = verify_log(written)
    assert only_problem(result) == (5, 6, ProblemKind.SEQ_MISMATCH)
    assert {p.kind for p in result.problems if p.line == 5} == {
        ProblemKind.SEQ_MISMATCH,
        ProblemKind.PREV_MISMATCH,
    }


def test_reordered_lines_are_found(written: Path) -> None:
    content = lines(written)
    content[4], content[5] = content[5], content[4]
    rewrite(written, content)
    assert only_problem(verify_log(written)) == (5, 6, ProblemKind.SEQ_MISMATCH)


def test_inserted_record_is_found(written: Path) -> None:
    content = lines(written)
    # A forger who knows the format: right seq, right prev, right hash, for line 5...
    forged = rehashed(content[4], data={"forged": True})
    rewrite(written, [*content[:4], forged, *content[4:]])
    # ...still cannot make the genuine record after it follow.
    assert only_problem(verify_log(written)) == (6, 5, ProblemKind.SEQ_MISMATCH)


def test_garbage_line_is_found(written: Path) -> None:
    content = lines(written)
    content.insert(3, b"not json\n")
    rewrite(written, content)
    assert only_problem(verify_log(written)) == (4, None, ProblemKind.INVALID_JSON)


def test_torn_tail_is_reported_then_cut_on_reopen(
    written: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good_size = written.stat().st_size
    with written.open("ab") as handle:
        handle.write(b'{"data":{"n":10},"event":"mi')  # a crash mid-write
    assert only_problem(verify_log(written)) == (11, None, ProblemKind.TORN_LINE)

    with caplog.at_level(logging.WARNING, logger="signer.audit"):
        log = AuditLog(written, clock=ticking_clock())
    assert "torn final line" in caplog.text
    assert written.stat().st_size == good_size
    with log:
        assert log.append("mint", {"n": 10}).seq == 11
    assert verify_log(written).ok


def test_reopen_continues_the_chain(written: Path) -> None:
    last = json.loads(lines(written)[-1])
    with AuditLog(written, clock=ticking_clock()) as log:
        assert (log.last_seq, log.last_hash) == (10, last["hash"])
        record = log.append("mint", {"n": 10})
    assert (record.seq, record.prev) == (11, last["hash"])
    result = verify_log(written)
    assert result.ok
    assert result.last_seq == 11


def test_refuses_to_append_after_a_broken_last_record(written: Path) -> None:
    content = lines(written)
    content[-1] = content[-1].replace(b'"n":9', b'"n":8')
    rewrite(written, content)
    with pytest.raises(AuditError, match="broken last record"):
        AuditLog(written)


def test_one_writer_per_file(log_path: Path) -> None:
    with AuditLog(log_path), pytest.raises(AuditError, match="already open"):
        AuditLog(log_path)
    with AuditLog(log_path) as log:  # released on close
        log.append("start")


def test_closed_log_refuses_appends(log_path: Path) -> None:
    log = AuditLog(log_path)
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.append("mint")


@pytest.mark.parametrize(
    "data",
    [
        {"token": "x"},
        {"subject_token": "x"},
        {"Access-Token": "x"},
        {"share": "x"},
        {"key_share": "x"},
        {"nonce": "x"},
        {"secret": "x"},
        {"client_secret": "x"},
        {"private_key": "x"},
        {"private_key_pem": "x"},
        {"pin": "1234"},
        {"outer": {"inner": [{"token": "x"}]}},
    ],
)
def test_keys_naming_secrets_are_refused(log_path: Path, data: dict[str, object]) -> None:
    """Keys are the program's: one that names a secret is a bug, refused before writing."""
    with AuditLog(log_path) as log:
        with pytest.raises(AuditError, match=r"refusing a secret"):
            log.append("mint", data)
        assert log.last_seq == 0
    assert log_path.read_bytes() == b""


JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMC4=\n-----END PRIVATE KEY-----"


def nested(depth: int, bottom: object = "bottom") -> object:
    value = bottom
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (JWT, f"[redacted {token_ref(JWT)}]"),  # a JWT under any name
        (f"sub {JWT!r} is not granted", f"sub '[redacted {token_ref(JWT)}]' is not granted"),
        (PRIVATE_KEY, f"[redacted {token_ref(PRIVATE_KEY)}]"),
        (f"detail: {PRIVATE_KEY}", f"[redacted {token_ref('detail: ' + PRIVATE_KEY)}]"),
        ("\ud800 lone surrogate", "\\ud800 lone surrogate"),
        (float("nan"), "[not a JSON number: nan]"),
        (float("inf"), "[not a JSON number: inf]"),
        ([{"deeper": JWT}], [{"deeper": f"[redacted {token_ref(JWT)}]"}]),
        # The record is level 0 and its "detail" level 1: 15 lists fit, the 16th is marked.
        (nested(10_000), nested(15, f"[nested deeper than {MAX_DEPTH} levels]")),
    ],
)
def test_values_that_trip_the_secret_filter_are_redacted_never_dropped_with_the_record(
    log_path: Path, value: object, written: object
) -> None:
    """Values come from whoever sent the request: whatever they hold, the record is written,
    and a token or private key in them reaches the disk only as a reference."""
    with AuditLog(log_path) as log:
        record = log.append("refusal", {"rule": "guard:subject_mismatch", "detail": value})
    assert record.seq == 1
    assert verify_log(log_path).ok
    on_disk = json.loads(lines(log_path)[0])["data"]
    assert on_disk == dict(record.data)
    assert on_disk["rule"] == "guard:subject_mismatch"
    assert on_disk["detail"] == written
    text = log_path.read_text()
    assert JWT not in text
    assert "MC4=" not in text


def test_references_to_secrets_are_allowed(log_path: Path) -> None:
    with AuditLog(log_path) as log:
        record = log.append(
            "mint",
            {"token_ref": token_ref("eyJ.x.y"), "share_index": 2, "nonce_count": 3, "spin": 1},
        )
    assert record.data["token_ref"] == "sha256:" + hashlib.sha256(b"eyJ.x.y").hexdigest()[:16]


def test_token_ref_of_bytes_and_str_agree() -> None:
    assert token_ref(b"abc") == token_ref("abc") == "sha256:ba7816bf8f01cfea"


@pytest.mark.parametrize(
    ("event", "data"),
    [("", {}), ("two words", {}), ("mint", {"x": object()}), ("mint", {1: "x"})],
)
def test_bad_events_and_data_are_refused(
    log_path: Path, event: str, data: dict[str, object]
) -> None:
    with AuditLog(log_path) as log, pytest.raises(AuditError):
        log.append(event, data)


def test_concurrent_appends_keep_one_chain(log_path: Path) -> None:
    with AuditLog(log_path) as log:

        def worker(n: int) -> None:
            for i in range(40):
                log.append("mint", {"thread": n, "i": i})

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    result = verify_log(log_path)
    assert result.ok, result.problems
    assert result.records == result.last_seq == 320


def test_a_failed_write_is_an_error_and_the_log_resumes_when_the_disk_does(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with AuditLog(log_path) as log:
        log.append("start")
        real_write = os.write

        def disk_full(fd: int, data: bytes) -> int:
            real_write(fd, data[: len(data) // 2])  # a partial line reaches the file
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", disk_full)
        for _ in range(2):  # still full: every append fails, none is acknowledged
            with pytest.raises(AuditError, match="No space left"):
                log.append("mint")
        assert verify_log(log_path).ok  # the partial line was cut off
        monkeypatch.undo()
        assert log.append("mint").seq == 2
    result = verify_log(log_path)
    assert result.ok, result.problems
    assert result.last_seq == 2


def test_after_a_failed_write_a_log_that_no_longer_ends_on_its_head_stays_stopped(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with AuditLog(log_path) as log:
        log.append("start")
        log.append("second")

        def read_only(fd: int, data: bytes) -> int:
            raise OSError(30, "Read-only file system")

        monkeypatch.setattr(os, "write", read_only)
        with pytest.raises(AuditError, match="Read-only"):
            log.append("mint")
        monkeypatch.undo()
        # Meanwhile someone else cut the last record off the file.
        lines = log_path.read_bytes().splitlines(keepends=True)
        with open(log_path, "r+b") as handle:
            handle.truncate(len(lines[0]))
        for _ in range(2):
            with pytest.raises(AuditError, match="no longer ends on the last acknowledged"):
                log.append("mint")
    assert verify_log(log_path).last_seq == 1


def test_async_wrapper_appends(log_path: Path) -> None:
    async def main() -> None:
        with AuditLog(log_path) as log:
            writer = AsyncAuditLog(log)
            await asyncio.gather(*(writer.append("mint", {"i": i}) for i in range(5)))

    asyncio.run(main())
    assert verify_log(log_path).last_seq == 5


def test_verify_unreadable_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="cannot read"):
        verify_log(tmp_path / "absent.jsonl")


def test_empty_log_verifies(log_path: Path) -> None:
    log_path.write_bytes(b"")
    assert verify_log(log_path) == VerifyResult(0, 0, GENESIS_HASH, ())


def test_async_appends_share_fsyncs_and_keep_the_chain(tmp_path: Path) -> None:
    from signer.audit import AsyncAuditLog

    log = AuditLog(tmp_path / "group.jsonl")
    batches: list[int] = []
    original = log._append_prepared  # what the writer thread runs: one fsync per call

    def counting(entries):  # type: ignore[no-untyped-def]
        batches.append(len(entries))
        return original(entries)

    log._append_prepared = counting  # type: ignore[method-assign]
    writer = AsyncAuditLog(log)

    async def run() -> list[int]:
        records = await asyncio.gather(
            *(writer.append("signature_share", {"n": i}) for i in range(200))
        )
        return [r.seq for r in records]

    seqs = asyncio.run(run())
    log.close()
    assert sorted(seqs) == list(range(1, 201))
    assert sum(batches) == 200
    assert len(batches) < 200  # concurrent appends were grouped under fewer fsyncs
    assert verify_log(tmp_path / "group.jsonl").ok


def test_async_append_starts_the_write_before_the_caller_awaits_it(tmp_path: Path) -> None:
    """The signer starts its sign_request record, then runs the guard and signs without yielding
    to the event loop, and awaits the record last: the disk must already be at work meanwhile."""
    log = AuditLog(tmp_path / "early.jsonl")
    started = threading.Event()
    original = log._append_prepared  # what the writer thread runs

    def noting(entries):  # type: ignore[no-untyped-def]
        started.set()
        return original(entries)

    log._append_prepared = noting  # type: ignore[method-assign]
    writer = AsyncAuditLog(log)

    async def run() -> int:
        record = writer.append("sign_request", {"request_id": "r-1"})
        # No await between the append and this blocking wait: only a write handed to the
        # writer thread by `append` itself can set the event.
        assert started.wait(timeout=10), "the record was not being written before it was awaited"
        return (await record).seq

    assert asyncio.run(run()) == 1
    log.close()
    assert verify_log(tmp_path / "early.jsonl").ok


def test_async_append_refuses_a_bad_record_on_its_own_future(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "refused.jsonl") as log:
        writer = AsyncAuditLog(log)

        async def run() -> None:
            refused = writer.append("mint", {"token": "eyJx.eyJy.z"})
            kept = writer.append("mint", {"token_ref": "sha256:00"})
            with pytest.raises(AuditError, match="refusing a secret"):
                await refused
            assert (await kept).seq == 1

        asyncio.run(run())
    assert verify_log(tmp_path / "refused.jsonl").last_seq == 1


def test_async_log_outlives_an_event_loop_closed_during_a_write(tmp_path: Path) -> None:
    """A loop that closes with a write in flight never hears its outcome; the next loop's
    appends are written all the same."""
    log = AuditLog(tmp_path / "loops.jsonl")
    writer = AsyncAuditLog(log)
    release = threading.Event()
    original = log._append_prepared

    def slow(entries):  # type: ignore[no-untyped-def]
        release.wait(timeout=10)
        return original(entries)

    log._append_prepared = slow  # type: ignore[method-assign]
    loop = asyncio.new_event_loop()

    async def start_one() -> None:
        writer.append("mint", {"n": 1})  # in flight when its loop closes

    loop.run_until_complete(start_one())
    loop.close()
    release.set()

    async def second() -> int:
        return (await asyncio.wait_for(writer.append("mint", {"n": 2}), timeout=10)).seq

    # The closed loop's write runs on in its own thread; either may reach the file first.
    assert asyncio.run(second()) in (1, 2)
    deadline = time.monotonic() + 10
    while verify_log(tmp_path / "loops.jsonl").records < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    log.close()
    verified = verify_log(tmp_path / "loops.jsonl")
    assert (verified.ok, verified.last_seq) == (True, 2)
