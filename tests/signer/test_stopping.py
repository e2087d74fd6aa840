"""signer.stopping: from SIGTERM on, a server has STOP_DEADLINE_SECONDS to end; one held past them
says at ERROR where it waits and exits with EXIT_STUCK. The processes here get a real signal and
end through the real os._exit."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from signer import stopping

REPO = Path(__file__).resolve().parents[2]
PROLOGUE = """
import asyncio, logging, sys, time
from signer import runtime
from signer.stopping import stop_on_signals
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
"""


def _stopped(body: str) -> tuple[int, str]:
    """Run PROLOGUE + `body` (which prints "ready" once it waits for the signal), send SIGTERM,
    and return the exit status and stderr."""
    process = subprocess.Popen(
        [sys.executable, "-c", PROLOGUE + textwrap.dedent(body)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    return process.returncode, stderr


def test_a_stop_that_finishes_within_the_bound_exits_normally() -> None:
    returncode, stderr = _stopped(
        """
        async def main():
            stop = asyncio.Event()
            stop_on_signals(stop, deadline=1.0)
            print("ready", flush=True)
            await stop.wait()
            await asyncio.sleep(0.5)  # closing what it holds, within the bound
            logging.info("stopped")

        runtime.run(main())
        """
    )
    assert returncode == 0, stderr
    assert "INFO root: stopped" in stderr
    assert "still running" not in stderr


def test_a_task_that_ignores_cancellation_ends_the_process_with_status_70_and_is_named() -> None:
    returncode, stderr = _stopped(
        """
        async def refuses_to_stop():
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    continue

        async def main():
            stop = asyncio.Event()
            stop_on_signals(stop, deadline=1.0)
            stubborn = asyncio.create_task(refuses_to_stop(), name="stubborn")
            print("ready", flush=True)
            await stop.wait()
            stubborn.cancel()
            await stubborn

        runtime.run(main())
        """
    )
    assert returncode == stopping.EXIT_STUCK == 70
    assert "ERROR signer.stopping: still running 1 s after the request to stop" in stderr
    (stubborn,) = [line for line in stderr.splitlines() if line.strip().startswith("task stubborn")]
    assert "refuses_to_stop (<string>:" in stubborn
    assert "sleep (tasks.py:" in stubborn  # down to what it waits on
    assert any(line.strip().startswith("task Task-1: main (") for line in stderr.splitlines())


def test_a_blocked_event_loop_is_named_by_its_thread() -> None:
    returncode, stderr = _stopped(
        """
        def blocks_the_loop():
            time.sleep(3600)

        async def main():
            stop = asyncio.Event()
            stop_on_signals(stop, deadline=1.0)
            print("ready", flush=True)
            await stop.wait()
            blocks_the_loop()

        runtime.run(main())
        """
    )
    assert returncode == stopping.EXIT_STUCK
    lines = stderr.splitlines()
    (main_thread,) = [line for line in lines if line.strip().startswith("thread MainThread")]
    assert "blocks_the_loop (<string>:" in main_thread


def test_a_second_signal_keeps_the_first_ones_bound() -> None:
    loop = asyncio.new_event_loop()
    released = threading.Event()
    exits: list[int] = []
    watchdog = stopping.Watchdog(loop, 5.0, exit=exits.append, sleep=lambda _: released.wait())
    try:
        watchdog.start()
        watchdog.start()
        watchdogs = [t for t in threading.enumerate() if t.name == "stop-watchdog"]
        assert len(watchdogs) == 1
        released.set()
        watchdogs[0].join(timeout=10)
        assert exits == [stopping.EXIT_STUCK]
    finally:
        released.set()
        loop.close()


def test_where_it_waits_names_code_never_values() -> None:
    async def holds_a_share(ready: asyncio.Event, gate: asyncio.Future[None]) -> None:
        share = "share-" + "9f86d081884c7d65"  # a local a stack dump with values would show
        ready.set()
        await gate
        del share

    async def main() -> list[str]:
        ready = asyncio.Event()
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(holds_a_share(ready, gate), name="holder")
        await ready.wait()
        lines = await asyncio.to_thread(stopping.where_it_waits, asyncio.get_running_loop())
        gate.set_result(None)
        await task
        return lines

    lines = asyncio.run(main())
    (holder,) = [line for line in lines if line.startswith("task holder")]
    assert "holds_a_share (test_stopping.py:" in holder
    assert holder.endswith("> Future")
    assert not any("9f86d081884c7d65" in line for line in lines)
