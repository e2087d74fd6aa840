"""`make soak`: ten minutes at a steady rate through Envoy, with a key rotation, a signer restart
and a gateway restart in the middle; the memory and open files of every process held against
their level after warm-up.

    python -m tests.faults.soak [--minutes 10] [--keep DIR]

The stack and traffic are `make test-faults`' (two replicas, three signers, Redis, the front
Envoy; seen credentials, new CI tokens, /token exchanges at 16 requests a second). Minted tokens
live 120 s here (TOKEN_DEFAULT_TTL_SECONDS), so do the CI tokens presented (`CI_TOKEN_LIFETIME`),
and a signer's evidence budget counts over 120 s, so every cache and window that holds
per-credential state (the token cache in Redis, the hot cache, the identity cache, the signers'
budgets) fills and turns over within the warm-up: what grows after it is a leak, not a window
filling. Timeline (for 10 minutes):

    0:00  warm-up                        2:00-2:30  baseline RSS and open files (median)
    4:00  key rotation: a DKG adds a key among the signers, replica 1 publishes it, `extauthz
          pin-keys` pins it, replica 2 activates it after the publish lead
    5:30  signer 2 restarted (SIGTERM, start)
    7:00  gateway replica 2 restarted (SIGTERM, start)
    9:30-10:00  final RSS and open files (median)

Every process is sampled every 5 s (VmRSS and /proc/PID/fd). Prints a line a minute and ends with
one JSON line: `rss_growth` and `fd_growth` (the largest over the processes of final / baseline -
1), `failed` (requests that failed; a quorum holds throughout, so none may), and per-process
figures. Exits 1 unless every process stays within 10 % and nothing failed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import jwt

from extauthz.dev.gateway import pin_keys
from signer.token import kid_for
from tests.faults.stack import FaultStack, fault_stack
from tests.faults.traffic import Traffic, failures_by_status, latency_ms

BOUND = 0.10
SAMPLE_SECONDS = 5.0
PUBLISH_LEAD_SECONDS = 10
SHORT_WINDOWS = {
    "TOKEN_DEFAULT_TTL_SECONDS": "120",
    "KEYMINT_KEY_PUBLISH_LEAD_SECONDS": str(PUBLISH_LEAD_SECONDS),
    # The defaults (the fault runs tighten these to see Redis outages sooner).
    "KEYMINT_STATE_SYNC_SECONDS": "0.5",
    "KEYMINT_STATE_MAX_STALENESS_SECONDS": "5",
}
SIGNER_WINDOWS = {"KEYMINT_EVIDENCE_BUDGET_WINDOW_SECONDS": "120"}
# A verified identity is kept for its credential's life, at most 300 s
# (extauthz/server/identitycache.py): CI tokens living 120 s, like the windows above, let that
# cache fill before the baseline too.
CI_TOKEN_LIFETIME = 120


def usage(pid: int) -> tuple[float, int] | None:
    """(resident MB, open file descriptors) of a process, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024, fds
    return None


def admin(stack: FaultStack, replica: int, step: str, document: object) -> dict[str, object]:
    url = f"http://127.0.0.1:{stack.gateways[replica - 1].http_port}/admin/keys/{step}"
    request = urllib.request.Request(
        url,
        data=json.dumps(document).encode(),
        headers={
            "Authorization": f"Bearer {stack.admin_token}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            answer: dict[str, object] = json.loads(reply.read())
            return answer
    except urllib.error.HTTPError as error:
        raise RuntimeError(
            f"{step} through replica {replica}: {error.code} {error.read()!r}"
        ) from None


def rotate(stack: FaultStack) -> dict[str, object]:
    """README "Verification keys and rotation": DKG add, publish, pin, activate."""
    from signer.ceremony.driver import connect

    started = time.time()

    async def dkg() -> bytes:
        addresses = stack.cluster.addresses([1, 2, 3])
        async with connect(addresses, tls_files=stack.cluster.operator_tls) as driver:
            return (await driver.dkg(2)).group_public_key

    new_kid = kid_for(stack.background.run(dkg(), timeout=120))
    published = admin(stack, 1, "publish", {"kid": new_kid})
    pinned_file = stack.directory / "pinned-jwks.json"
    printed = pin_keys(stack.env, stack.gateways[0].http_port, pinned_file)
    pinned = [key["kid"] for key in json.loads(pinned_file.read_text())["keys"]]
    time.sleep(PUBLISH_LEAD_SECONDS + 1)
    activated = admin(stack, 2, "activate", {})
    return {
        "new_kid": new_kid,
        "published": published.get("published"),
        "pinned": pinned,
        "pin_keys": printed.strip(),
        "active": activated.get("active"),
        "seconds": round(time.time() - started, 1),
    }


def restart_gateway(stack: FaultStack, replica: int) -> None:
    gateway = stack.gateways[replica - 1]
    gateway.stop()
    gateway.start()


def soak(directory: Path, minutes: float) -> tuple[dict[str, object], bool]:
    total = minutes * 60
    scale = total / 600  # the timeline above, for 10 minutes
    baseline_at = (90 * scale, 120 * scale)
    final_at = (total - 30 * scale, total)
    events = [
        (240 * scale, "key rotation"),
        (330 * scale, "signer 2 restart"),
        (420 * scale, "gateway replica 2 restart"),
    ]
    samples: dict[str, list[tuple[float, float, int]]] = {}  # name -> (t, rss MB, fds)
    notes: dict[str, object] = {}
    with fault_stack(directory, gateway_env=SHORT_WINDOWS, signer_env=SIGNER_WINDOWS) as stack:
        traffic = Traffic(stack, token_lifetime=CI_TOKEN_LIFETIME)
        traffic.warm()
        traffic.start()
        started = time.time()
        next_sample = next_line = 0.0
        try:
            while (elapsed := time.time() - started) < total:
                if events and elapsed >= events[0][0]:
                    _, event = events.pop(0)
                    print(f"t={elapsed:5.0f}s {event}", flush=True)
                    if event == "key rotation":
                        notes["rotation"] = rotate(stack)
                        print(f"        {notes['rotation']}", flush=True)
                    elif event == "signer 2 restart":
                        stack.restart_signer(2)
                    else:
                        restart_gateway(stack, 2)
                    continue
                if elapsed >= next_sample:
                    for name, pid in stack.pids().items():
                        measured = usage(pid)
                        if measured is not None:
                            samples.setdefault(name, []).append((elapsed, *measured))
                    next_sample += SAMPLE_SECONDS
                if elapsed >= next_line:
                    window = traffic.since(started + elapsed - 60)
                    rss = ", ".join(
                        f"{name} {points[-1][1]:.0f}" for name, points in sorted(samples.items())
                    )
                    print(
                        f"t={elapsed:5.0f}s last minute: {len(window)} requests, failed "
                        f"{failures_by_status(window) or 'none'}, p99 "
                        f"{latency_ms(window)['p99_ms']} ms; RSS MB: {rss}",
                        flush=True,
                    )
                    next_line += 60
                time.sleep(0.5)
        finally:
            traffic.stop()
        outcomes = [o for o in traffic.outcomes if o.at >= started]
        notes["kids_after_rotation"] = sorted(
            {
                str(jwt.get_unverified_header(o.token)["kid"])
                for o in outcomes
                if o.token is not None and o.kind != "seen" and o.at >= started + 300 * scale
            }
        )
        stopped = stack.stop_cleanly()

    processes: dict[str, dict[str, object]] = {}
    for name, points in sorted(samples.items()):
        before = [p for p in points if baseline_at[0] <= p[0] < baseline_at[1]]
        after = [p for p in points if final_at[0] <= p[0] <= final_at[1]]
        if not before or not after:
            continue
        rss = (statistics.median(p[1] for p in before), statistics.median(p[1] for p in after))
        fds = (statistics.median(p[2] for p in before), statistics.median(p[2] for p in after))
        processes[name] = {
            "rss_mb": [round(rss[0], 1), round(rss[1], 1)],
            "fds": [fds[0], fds[1]],
            "rss_growth": round(rss[1] / rss[0] - 1, 3),
            "fd_growth": round(fds[1] / fds[0] - 1, 3),
        }
    failed = [o for o in outcomes if o.failed]
    rss_growth = max((float(p["rss_growth"]) for p in processes.values()), default=0.0)  # type: ignore[arg-type]
    fd_growth = max((float(p["fd_growth"]) for p in processes.values()), default=0.0)  # type: ignore[arg-type]
    rotation = notes.get("rotation", {})
    rotated = (
        isinstance(rotation, dict)
        and rotation.get("active") == rotation.get("new_kid")
        and notes["kids_after_rotation"] == [rotation.get("new_kid")]
    )
    held = (
        not failed
        and rss_growth <= BOUND
        and fd_growth <= BOUND
        and len(processes) == 7
        and rotated
        and all(s.clean for s in stopped)
    )
    result = {
        "minutes": minutes,
        "requests": len(outcomes),
        "failed": len(failed),
        "failed_by_status": failures_by_status(outcomes),
        "latency": latency_ms(outcomes),
        "rss_growth": rss_growth,
        "fd_growth": fd_growth,
        "processes": processes,
        "rotation": rotation,
        "kids_after_rotation": notes["kids_after_rotation"],
        "stopped_cleanly": {s.name: s.clean for s in stopped},
        "held": held,
    }
    return result, held


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--keep", type=Path, help="run in DIR and keep the logs there")
    args = parser.parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result, held = soak(args.keep, args.minutes)
    else:
        with tempfile.TemporaryDirectory(prefix="keymint-soak-") as directory:
            result, held = soak(Path(directory), args.minutes)
    for name, figures in result["processes"].items():  # type: ignore[union-attr]
        print(
            f"{name}: RSS {figures['rss_mb'][0]} -> {figures['rss_mb'][1]} MB "
            f"({figures['rss_growth']:+.1%}), open files {figures['fds'][0]} -> "
            f"{figures['fds'][1]} ({figures['fd_growth']:+.1%})",
            flush=True,
        )
    print(json.dumps(result, sort_keys=True))
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
