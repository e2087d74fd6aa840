"""Stopping the local stack's processes: as an operator would, or as a crash."""

from __future__ import annotations

import signal
import subprocess


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM (after a SIGCONT: a stopped process cannot act on it), then SIGKILL if it has not
    exited within `timeout`; its stdout pipe, if any, closed."""
    if process is None:
        return
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def kill_process(process: subprocess.Popen[bytes] | None) -> None:
    """A crash, not a shutdown: SIGKILL, and wait for it."""
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()
