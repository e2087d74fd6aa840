"""Stopping within a bound, for `signer serve` and `extauthz serve`.

SIGTERM or SIGINT asks a server to stop: it stops taking calls, lets those in flight finish and
closes what it holds. From the first such signal it has `STOP_DEADLINE_SECONDS`. A process still
running then logs at ERROR where each thread and each asyncio task is waiting, and exits with
`EXIT_STUCK`: its supervisor (Kubernetes, systemd, the fault tests' `stop_cleanly`) sees a failed
stop and its reason, not a process it has to kill blind. The bound is a thread of its own, so it
holds whatever blocks: a task that never ends, the event loop itself, the interpreter's exit.

Each line names code only (functions, files, lines), never values: no token, share or key can
reach the log through it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

STOP_DEADLINE_SECONDS = 10.0
EXIT_STUCK = 70  # sysexits.h EX_SOFTWARE: the stop failed inside the program
FRAMES_PER_THREAD = 4

log = logging.getLogger(__name__)


def stop_on_signals(
    stop: asyncio.Event,
    *,
    deadline: float = STOP_DEADLINE_SECONDS,
    exit: Callable[[int], Any] = os._exit,
) -> Watchdog:
    """SIGTERM and SIGINT set `stop` and start the watchdog (`Watchdog`). Call from the running
    loop's thread, the main one (only it receives signals)."""
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(loop, deadline, exit=exit)

    def requested() -> None:
        watchdog.start()
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, requested)
    return watchdog


class Watchdog:
    """Once started, waits `deadline` seconds, then says where the process is stuck and ends it
    with `EXIT_STUCK`. A process that ends before then takes the (daemon) thread with it."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        deadline: float,
        *,
        exit: Callable[[int], Any] = os._exit,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._loop = loop
        self._deadline = deadline
        self._exit = exit
        self._sleep = sleep
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:  # a second signal changes nothing: the first one's bound holds
            self._thread = threading.Thread(target=self.expire, name="stop-watchdog", daemon=True)
            self._thread.start()

    def expire(self) -> None:
        self._sleep(self._deadline)
        log.error(
            "still running %.0f s after the request to stop: exiting with status %d; where it "
            "waits:\n  %s",
            self._deadline,
            EXIT_STUCK,
            "\n  ".join(where_it_waits(self._loop)),
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._exit(EXIT_STUCK)


def where_it_waits(loop: asyncio.AbstractEventLoop) -> list[str]:
    """One line per other thread (its innermost frames) and per unfinished task of `loop` (the
    chain of coroutines it is awaiting, down to what it waits on). Safe to call from any thread:
    it reads frames, it runs nothing on the loop."""
    frames = sys._current_frames()
    lines = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident) if thread.ident is not None else None
        if frame is None or thread is threading.current_thread():
            continue
        lines.append(f"thread {thread.name}: {_stack(frame)}")
    for task in sorted(_unfinished(loop), key=lambda t: t.get_name()):
        lines.append(f"task {task.get_name()}: {_awaiting(task.get_coro())}")
    return lines


def _unfinished(loop: asyncio.AbstractEventLoop) -> set[asyncio.Task[Any]]:
    for _ in range(3):  # the set of tasks may change while it is copied from this thread
        try:
            return asyncio.all_tasks(loop)
        except RuntimeError:
            continue
    return set()


def _stack(frame: FrameType | None) -> str:
    innermost: list[str] = []
    while frame is not None and len(innermost) < FRAMES_PER_THREAD:
        innermost.append(_where(frame.f_code, frame.f_lineno))
        frame = frame.f_back
    return " < ".join(innermost)


# What each kind of awaitable calls its code, its frame and what it awaits in turn.
_ATTRIBUTES = (
    ("cr_code", "cr_frame", "cr_await"),  # coroutine
    ("gi_code", "gi_frame", "gi_yieldfrom"),  # generator-based coroutine
    ("ag_code", "ag_frame", "ag_await"),  # async generator
)


def _awaiting(awaitable: object) -> str:
    """The await chain from the task's coroutine down: `outer (file:line) > ... > Future`."""
    chain: list[str] = []
    while awaitable is not None and len(chain) < 32:
        kind = next((k for k in _ATTRIBUTES if hasattr(awaitable, k[0])), None)
        if kind is None:
            name = type(awaitable).__name__
            chain.append("Future" if name == "FutureIter" else name)  # a C future's iterator
            break
        code_name, frame_name, awaited_name = kind
        code: CodeType = getattr(awaitable, code_name)
        frame: FrameType | None = getattr(awaitable, frame_name)
        chain.append(_where(code, frame.f_lineno if frame is not None else code.co_firstlineno))
        awaitable = getattr(awaitable, awaited_name)
    return " > ".join(chain) or "not started"


def _where(code: CodeType, line: int | None) -> str:
    return f"{code.co_qualname} ({os.path.basename(code.co_filename)}:{line})"
