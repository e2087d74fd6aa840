"""CPU time and resident size of running processes, from /proc (Linux)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessSample:
    cpu_seconds: float  # user + system, since the process started
    rss_bytes: int


def sample_one(pid: int) -> ProcessSample:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return ProcessSample(cpu, rss)


def sample(pids: Mapping[str, int]) -> dict[str, ProcessSample]:
    """Each process that is still running, by name."""
    found = {}
    for name, pid in pids.items():
        try:
            found[name] = sample_one(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found
