"""Run fuzz targets, each in its own process, and report: `python -m fuzz --help`."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SEEDS = ROOT / "seeds"
CRASHES = ROOT / "crashes"
DEFAULT_TARGETS = (
    "check_request",
    "xfcc",
    "jwt_identity",
    "jwt_signer",
    "token_form",
    "sign_request",
    "ceremony",
    "frost_encoding",
)
MAX_LEN = {"check_request": 32768, "sign_request": 32768, "ceremony": 65536, "token_form": 20000}
EXECUTED = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
DONE = re.compile(r"Done (\d+) runs")
PROGRESS = re.compile(r"^#(\d+)\s", re.MULTILINE)


@dataclass(frozen=True)
class Result:
    target: str
    iterations: int
    crashes: int
    seconds: float
    detail: str  # what the crash was, and where its input is kept


def run_target(target: str, runs: int, seed: int | None) -> Result:
    artifacts = CRASHES / target
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as work:
        corpus = Path(work) / "corpus"
        shutil.copytree(SEEDS / target, corpus)  # libFuzzer adds what it finds to this copy
        argv = [
            sys.executable,
            "-m",
            "fuzz.one",
            target,
            f"-runs={runs}",
            f"-max_len={MAX_LEN.get(target, 8192)}",
            "-timeout=30",
            "-rss_limit_mb=4096",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/",
            *([f"-seed={seed}"] if seed is not None else []),
            str(corpus),
        ]
        started = time.monotonic()
        done = subprocess.run(
            argv, cwd=ROOT.parent, capture_output=True, text=True, errors="replace", check=False
        )
        seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    counted = EXECUTED.search(output) or DONE.search(output)
    progress = PROGRESS.findall(output)
    iterations = int(counted.group(1)) if counted else int(progress[-1]) if progress else 0
    crashed = done.returncode != 0 or "ERROR: libFuzzer" in output
    detail = ""
    if crashed:
        lines = [line for line in output.splitlines() if not line.startswith("INFO:")]
        start = next(
            (
                i
                for i, line in enumerate(lines)
                if "Uncaught Python exception" in line or "ERROR:" in line
            ),
            max(0, len(lines) - 30),
        )
        kept = [line for line in lines[start:] if "Test unit written to" in line]
        detail = "\n".join(lines[start : start + 30] + kept)
    return Result(target, iterations, 1 if crashed else 0, seconds, detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000, help="iterations per target")
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated (default: {','.join(DEFAULT_TARGETS)})",
    )
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once")
    parser.add_argument("--seed", type=int, default=None, help="libFuzzer's random seed")
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    unknown = [t for t in targets if not (SEEDS / t).is_dir()]
    if unknown:
        parser.error(f"no such target (no seeds): {', '.join(unknown)}")
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda t: run_target(t, args.runs, args.seed), targets))
    for result in results:
        print(
            f"{result.target}: {result.iterations} iterations in {result.seconds:.1f} s, "
            f"{result.crashes} crash(es)",
            flush=True,
        )
        if result.detail:
            print("    " + result.detail.replace("\n", "\n    "), flush=True)
    print(f"wall time {time.monotonic() - started:.1f} s", flush=True)
    summary = {
        "targets": {r.target: {"iterations": r.iterations, "crashes": r.crashes} for r in results}
    }
    print(json.dumps(summary, sort_keys=True), flush=True)
    short = [r.target for r in results if r.iterations < args.runs]
    return 1 if any(r.crashes for r in results) or short else 0


if __name__ == "__main__":
    sys.exit(main())
