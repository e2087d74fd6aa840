"""The fuzz targets (fuzz/), their seeds and their runner, as `make test` runs them: every seed is
a live input of its target (the valid ones accepted all the way through), a short run of every
target finds no crash, and the runner does count a crash when there is one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import one, targets

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "fuzz" / "seeds"
QUICK_RUNS = 3000
# Seeds that are valid inputs, which each target must take without a refusal: the fuzzer starts
# from inputs that reach the deepest code (an allow, a signature share, a staged key).
ACCEPTED = {
    "check_request": {"oidc-deploy", "svid-orders", "xfcc-from-proxy", "keymint-token"},
    "xfcc": {"cert"},
    "jwt_identity": {
        "oidc",
        "oidc-bytes",
        "unverified",
        "keymint",
        # One issuer of each other preset, every algorithm keymint allows (fuzz/world.py ISSUERS)
        "kubernetes-es256",
        "gitlab-rs256",
        "svid-es256",
        "svid-es384",
        "oidc-es256",
        "oidc-ps256",
        "oidc-eddsa",
    },
    "jwt_signer": {"signing-input", "endorsement", "chain", "trust-root"},
    "token_form": {"exchange"},
    "sign_request": {"oidc", "svid"},
    "ceremony": {"begin", "deal", "stage", "commit", "abort"},
    "frost_encoding": {f"kind-{i}" for i in range(8)},
}


def seeds(target: str) -> list[Path]:
    return sorted((SEEDS / target).iterdir())


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_every_seed_runs_and_the_valid_ones_are_accepted(name: str) -> None:
    target = targets.TARGETS[name]()
    accepted = set()
    for seed in seeds(name):
        try:
            target.run(seed.read_bytes())
        except target.refusals:
            continue
        accepted.add(seed.name)
    assert ACCEPTED[name] <= accepted, sorted(ACCEPTED[name] - accepted)


def test_each_narrowed_target_follows_modules_that_exist_and_only_those() -> None:
    modules = set(one.modules())
    assert {"extauthz.identity.xfcc", "signer.frost.encoding", "fuzz.targets"} <= modules
    for name, followed in one.FOLLOWED.items():
        assert name in targets.TARGETS or name in targets.HIDDEN, name
        assert set(followed) <= modules, (name, set(followed) - modules)
        kept = modules - set(one.not_followed(followed))
        assert kept == {m for m in modules if any(m.startswith(f) for f in followed)}, name
    assert "signer.frost.signing" in one.not_followed(one.FOLLOWED["xfcc"])
    assert "extauthz.identity.spiffe" not in one.not_followed(one.FOLLOWED["xfcc"])


def test_a_check_request_minting_a_token_the_group_key_does_not_verify_would_be_a_crash() -> None:
    """The check_request oracle is live: it holds the minted token against the group key."""
    from cryptography.exceptions import InvalidSignature
    from envoy.service.auth.v3.external_auth_pb2 import CheckResponse, OkHttpResponse

    from extauthz.server.respond import _header

    response = CheckResponse(
        ok_response=OkHttpResponse(headers=[_header("authorization", "Bearer e30.e30.AAAA")])
    )
    with pytest.raises(InvalidSignature):
        targets._assert_minted(response, bytes(32))


def fuzz(*args: str) -> tuple[int, dict[str, dict[str, int]], str]:
    done = subprocess.run(
        [sys.executable, "-m", "fuzz", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    last = done.stdout.strip().splitlines()[-1]
    summary: dict[str, dict[str, dict[str, int]]] = json.loads(last)
    return done.returncode, summary["targets"], done.stdout


def test_a_quick_run_of_every_target_finds_no_crash() -> None:
    code, results, out = fuzz("--runs", str(QUICK_RUNS), "--jobs", "2")

    assert sorted(results) == sorted(targets.TARGETS)
    for name, result in results.items():
        assert result == {"iterations": QUICK_RUNS, "crashes": 0}, (name, out)
    assert code == 0


def test_the_runner_counts_a_crash_and_keeps_its_input() -> None:
    crashes = REPO / "fuzz" / "crashes" / "canary"
    before = set(crashes.iterdir()) if crashes.exists() else set()

    code, results, out = fuzz("--targets", "canary", "--runs", "100")

    assert code == 1
    assert results["canary"]["crashes"] == 1, out
    assert "the canary crashed, as it should" in out
    kept = set(crashes.iterdir()) - before
    assert [path.read_bytes() for path in kept] in ([b"crash"], [])  # the same input: kept once
    assert any(path.read_bytes() == b"crash" for path in crashes.iterdir())
