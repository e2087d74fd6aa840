"""make bench-frost: FROST(Ed25519, SHA-512) operation costs beside one plain Ed25519 signature.

For 2-of-3 and 7-of-10 it times, as medians over many runs in this process:
- commit: one signer's round one (preprocessing, off the request path);
- sign: one signer's round two, from the commitment list as it arrives on the wire to its
  signature share. The deployed signer has validated its peers' commitments when they were
  announced, ahead of the request; sign_cold is the same with every peer commitment validated on
  the request path (two subgroup checks each);
- aggregate: the coordinator's whole RFC 9591 5.3 step, split into prepare (binding factors and
  group commitment: needs only the commitment list, so it runs while the signers work) and finish
  (sum the shares, verify the result as Ed25519; shares are checked one by one only on failure);
- the critical path as deployed: signers sign in parallel with the coordinator's prepare, so
  max(sign, prepare) + finish; and, for comparison, the sequential sign + aggregate.
The baseline is one libsodium Ed25519 signature over the same message, timed in the same run.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nacl.signing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from signer.frost import (
    SignatureShare,
    SigningCommitment,
    aggregate,
    commit,
    finish_aggregate,
    prepare_aggregate,
    sign,
    trusted_dealer_keygen,
)
from signer.frost.encoding import (
    commitment_key,
    decode_commitment_list,
    encode_commitment_list,
)

RUNS = 400
# A realistic minted-token signing input: base64url(header) "." base64url(claims).
MESSAGE = b"eyJhbGciOiJFZERTQSIsImtpZCI6ImFiY2RlZiIsInR5cCI6IkpXVCJ9." + b"x" * 380


def median_us(fn: Callable[[], object], runs: int = RUNS) -> float:
    for _ in range(10):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def measure(t: int, n: int) -> dict[str, float]:
    shares, package, _ = trusted_dealer_keygen(t, n)
    signers = shares[:t]
    me = signers[0]
    commit_us = median_us(lambda: commit(me))

    # Fresh nonces for every run: a nonce is used once.
    rounds = []
    for _ in range(RUNS + 10):
        nonces = [commit(s) for s in signers]
        commitment_list = [x.commitment for x in nonces]
        sig_shares = [
            sign(s, x, MESSAGE, commitment_list) for s, x in zip(signers, nonces, strict=True)
        ]
        rounds.append((nonces, encode_commitment_list(commitment_list), sig_shares))

    def signer_round(prevalidated: bool) -> Callable[[], object]:
        it = iter(rounds)

        def run() -> object:
            nonces, wire, _ = next(it)
            peers = nonces if prevalidated else nonces[:1]
            known = {commitment_key(x.commitment): x.commitment for x in peers}
            return sign(me, nonces[0], MESSAGE, decode_commitment_list(wire, known=known))

        return run

    sign_us = median_us(signer_round(prevalidated=True))
    sign_cold_us = median_us(signer_round(prevalidated=False))

    def coordinator_lists() -> Iterator[tuple[list[SigningCommitment], list[SignatureShare]]]:
        for nonces, _, sig_shares in rounds:
            yield [x.commitment for x in nonces], sig_shares

    lists = coordinator_lists()
    prepare_us = median_us(lambda: prepare_aggregate(next(lists)[0], MESSAGE, package))

    prepared = iter([(prepare_aggregate(c, MESSAGE, package), z) for c, z in coordinator_lists()])
    finish_us = median_us(lambda: finish_aggregate(*next(prepared)))

    lists = coordinator_lists()

    def whole_aggregate() -> bytes:
        commitment_list, sig_shares = next(lists)
        return aggregate(commitment_list, MESSAGE, package, sig_shares)

    aggregate_us = median_us(whole_aggregate)
    return {
        "commit_us": commit_us,
        "sign_us": sign_us,
        "sign_cold_us": sign_cold_us,
        "aggregate_us": aggregate_us,
        "aggregate_prepare_us": prepare_us,
        "aggregate_finish_us": finish_us,
        "critical_path_us": max(sign_us, prepare_us) + finish_us,
        "sequential_us": sign_us + aggregate_us,
    }


def main() -> None:
    key = nacl.signing.SigningKey.generate()
    ed25519_before = median_us(lambda: key.sign(MESSAGE))
    results = {f"{t}of{n}": measure(t, n) for t, n in ((2, 3), (7, 10))}
    ed25519_after = median_us(lambda: key.sign(MESSAGE))
    ed25519_us = min(ed25519_before, ed25519_after)
    print(f"plain Ed25519 sign (libsodium): {ed25519_us:8.1f} us  (median of {RUNS})")
    for name, r in results.items():
        print(f"FROST {name}:")
        for field, value in r.items():
            print(f"  {field:22s} {value:8.1f} us  ({value / ed25519_us:5.1f}x Ed25519)")
    summary = {
        "runs": RUNS,
        "ed25519_sign_us": round(ed25519_us, 2),
        **{
            f"{name}_{field}": round(value, 1)
            for name, r in results.items()
            for field, value in r.items()
        },
        "ratio_2of3_vs_ed25519": round(results["2of3"]["critical_path_us"] / ed25519_us, 2),
        "ratio_7of10_vs_ed25519": round(results["7of10"]["critical_path_us"] / ed25519_us, 2),
        "ratio_2of3_sequential_vs_ed25519": round(results["2of3"]["sequential_us"] / ed25519_us, 2),
        "ratio_7of10_sequential_vs_ed25519": round(
            results["7of10"]["sequential_us"] / ed25519_us, 2
        ),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
