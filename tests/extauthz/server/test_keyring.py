"""The key ring: endorsed keys only, persisted as public JSON and re-verified from the trust root.

The signers here are in memory: FROST shares from a trusted dealer, signing only what the real
endorsement guard (`signer.endorsement_guard`) accepts for the keys they hold.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from extauthz.config import GatewaySettings, SettingsError
from extauthz.server.app import trust_root_of
from extauthz.server.keyring import KeyRing, KeyRingError, RotationError, load_trust_root
from signer.coordinator import SigningRefused
from signer.endorsement import TrustRoot, endorsement_message, key_jwk
from signer.endorsement_guard import check_endorsement
from signer.frost import KeyShare, PublicKeyPackage, trusted_dealer_keygen
from signer.guard import GuardRefusal
from signer.keystate import KeyState
from signer.token import compact, kid_for
from tests.helpers import ManualClock
from tests.signer.frost.support import threshold_sign

ISSUER = "https://keymint.test"
START = 1_900_000_000.0
LEAD = 300.0
MAX_TTL = 900


@dataclass(frozen=True)
class Outcome:
    signature: bytes
    signers: tuple[int, ...] = (1, 2)


class InMemorySigners:
    """Three signers holding dealer shares of the same keys; each key is adopted on refresh."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.shares: dict[str, list[KeyShare]] = {}
        self.held: dict[str, PublicKeyPackage] = {}
        self.adopted: dict[str, PublicKeyPackage] = {}
        self.signed: list[bytes] = []

    def add_key(self) -> bytes:
        shares, package, _ = trusted_dealer_keygen(2, 3)
        kid = kid_for(package.group_public_key)
        self.shares[kid], self.held[kid] = shares, package
        return bytes(package.group_public_key)

    @property
    def packages(self) -> dict[str, PublicKeyPackage]:
        return dict(self.adopted)

    async def refresh_keys(self) -> dict[str, PublicKeyPackage]:
        self.adopted = dict(self.held)
        return self.packages

    async def sign(self, message: bytes, **_: object) -> Outcome:
        state = KeyState()
        for kid, package in self.held.items():
            state.install(self.shares[kid][0], package)
        try:
            check_endorsement(message, keys=state, issuer=ISSUER, now=self.clock())
        except GuardRefusal as refused:
            raise SigningRefused({1: f"guard:{refused.rule}: {refused.detail}"}) from None
        endorser = state.for_message(message)
        assert endorser is not None
        self.signed.append(message)
        shares = self.shares[endorser.kid][:2]
        return Outcome(threshold_sign(shares, endorser.package, message))

    def ready(self, kid: str | None = None) -> bool:
        return True

    async def close(self) -> None:
        pass


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def signers(clock: ManualClock) -> InMemorySigners:
    signers = InMemorySigners(clock)
    signers.add_key()
    asyncio.run(signers.refresh_keys())
    return signers


def root_of(signers: InMemorySigners) -> TrustRoot:
    first = next(iter(signers.held.values()))  # the first key the signers made
    return TrustRoot(ISSUER, (bytes(first.group_public_key),))


def load(
    signers: InMemorySigners, path: Path, clock: ManualClock, root: TrustRoot | None = None
) -> KeyRing:
    return asyncio.run(
        KeyRing.load(
            signers,
            root or root_of(signers),
            path=path,
            max_token_ttl_seconds=MAX_TTL,
            publish_lead_seconds=LEAD,
            clock=clock,
        )
    )


def test_the_first_start_makes_the_root_key_active_and_persists_it(
    signers: InMemorySigners, tmp_path: Path, clock: ManualClock
) -> None:
    root = root_of(signers)
    ring = load(signers, tmp_path / "keyring.json", clock, root)
    assert ring.active_key == root.keys[0]
    assert ring.published_kids() == [root.kids[0]]
    document = json.loads((tmp_path / "keyring.json").read_text())
    assert document["active"] == root.kids[0]
    assert document["endorsements"] == []
    assert ring.endorsements_document() == {
        "issuer": ISSUER,
        "roots": list(root.kids),
        "endorsements": [],
        "keys": list(root.kids),
    }


def test_a_published_key_is_endorsed_by_the_active_key_and_persisted_first(
    signers: InMemorySigners, tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "keyring.json"
    ring = load(signers, path, clock)
    old = ring.active_kid
    new_key = signers.add_key()  # the DKG that adds a key among the same signers
    new = kid_for(new_key)
    assert asyncio.run(ring.publish(new)) == new_key
    assert ring.published_kids() == [old, new]
    (endorsement,) = ring.endorsements
    assert endorsement.startswith(
        endorsement_message(ring.active_key, new_key, issuer=ISSUER, issued_at=int(START))
        .decode()
        .split(".")[0]
    )
    saved = json.loads(path.read_text())
    assert saved["next"] == {"kid": new, "published_at": START}
    assert saved["endorsements"] == [endorsement]
    assert load(signers, path, clock).published_kids() == [old, new]


def test_a_key_the_signers_will_not_endorse_is_refused_with_the_rule_and_changes_nothing(
    signers: InMemorySigners, tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "keyring.json"
    ring = load(signers, path, clock)
    before = path.read_bytes()
    own = Ed25519PrivateKey.generate().public_key()
    raw = own.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    with pytest.raises(SigningRefused) as refused:
        asyncio.run(ring.publish(kid_for(raw), key_jwk(raw)))
    assert refused.value.rule == "endorsement_key_unknown"
    assert ring.published_kids() == [ring.active_kid]
    assert path.read_bytes() == before


def test_a_kid_no_t_signers_hold_and_no_key_given_is_refused_locally(
    signers: InMemorySigners, tmp_path: Path, clock: ManualClock
) -> None:
    ring = load(signers, tmp_path / "keyring.json", clock)
    with pytest.raises(RotationError, match="no key nope is held by t signers that agree"):
        asyncio.run(ring.publish("nope"))
    assert signers.signed == []


def test_activation_waits_for_the_lead_then_the_old_key_retires_and_is_pruned(
    signers: InMemorySigners, tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "keyring.json"
    ring = load(signers, path, clock)
    old = ring.active_kid
    new = kid_for(signers.add_key())
    asyncio.run(ring.publish(new))
    with pytest.raises(RotationError, match="wait 300s more"):
        asyncio.run(ring.activate())
    clock.advance(LEAD)
    asyncio.run(ring.activate())
    assert (ring.active_kid, ring.next_kid) == (new, None)
    assert ring.published_kids() == [new, old]
    assert load(signers, path, clock).published_kids() == [new, old]
    clock.advance(MAX_TTL - 1)
    assert asyncio.run(ring.prune()) == []
    clock.advance(1)
    assert [kid_for(k) for k in asyncio.run(ring.prune())] == [old]
    assert ring.published_kids() == [new]
    assert load(signers, path, clock).published_kids() == [new]
    with pytest.raises(RotationError, match="no next key"):
        asyncio.run(ring.activate())


def test_a_tampered_file_cannot_add_a_key(
    signers: InMemorySigners, tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "keyring.json"
    load(signers, path, clock)
    document = json.loads(path.read_text())
    attacker = Ed25519PrivateKey.generate()
    own = attacker.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    message = endorsement_message(own, own, issuer=ISSUER, issued_at=int(START))
    forged = compact(message, attacker.sign(message))
    path.write_text(json.dumps({**document, "endorsements": [forged], "active": kid_for(own)}))
    with pytest.raises(KeyRingError, match=r"endorsement 0: signed by key .* not trusted"):
        load(signers, path, clock)
    path.write_text(json.dumps({**document, "next": {"kid": kid_for(own), "published_at": 0}}))
    with pytest.raises(KeyRingError, match=f"the next key {kid_for(own)} is not trusted"):
        load(signers, path, clock)


def test_the_gateway_refuses_a_root_no_t_signers_hold(
    signers: InMemorySigners, tmp_path: Path, clock: ManualClock
) -> None:
    elsewhere = InMemorySigners(clock)
    elsewhere.add_key()
    with pytest.raises(KeyRingError, match="none of the trust root's keys"):
        load(signers, tmp_path / "keyring.json", clock, root_of(elsewhere))


def test_the_gateway_refuses_an_active_key_the_signers_no_longer_hold(
    signers: InMemorySigners, tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "keyring.json"
    load(signers, path, clock)
    signers.adopted = {}
    with pytest.raises(KeyRingError, match=r"the active key .* is not held by t signers"):
        load(signers, path, clock)


def test_the_trust_root_setting_is_required_and_checked(
    signers: InMemorySigners, tmp_path: Path
) -> None:
    env = {"KEYMINT_ISSUER": ISSUER, "POLICY_FILE": "p", "KEYMINT_OIDC_AUDIENCES": "a"}
    with pytest.raises(SettingsError, match="KEYMINT_TRUST_ROOT: is required"):
        trust_root_of(GatewaySettings.from_env(env))
    path = tmp_path / "root.json"
    path.write_text(json.dumps(TrustRoot("https://other", root_of(signers).keys).to_document()))
    settings = GatewaySettings.from_env({**env, "KEYMINT_TRUST_ROOT": str(path)})
    with pytest.raises(SettingsError, match=r"KEYMINT_TRUST_ROOT: .* for issuer 'https://other'"):
        trust_root_of(settings)
    path.write_text(json.dumps(root_of(signers).to_document()))
    assert trust_root_of(settings) == load_trust_root(path, ISSUER) == root_of(signers)
    assert settings.state_dir == Path("./state")  # beside the audit log by default


def test_two_publishes_at_once_publish_one_key(
    signers: InMemorySigners, tmp_path: Path, clock: ManualClock
) -> None:
    ring = load(signers, tmp_path / "keyring.json", clock)
    first, second = kid_for(signers.add_key()), kid_for(signers.add_key())

    async def both() -> list[bytes | BaseException]:
        return await asyncio.gather(
            ring.publish(first), ring.publish(second), return_exceptions=True
        )

    published, refused = asyncio.run(both())
    assert isinstance(published, bytes)
    assert isinstance(refused, RotationError)
    assert f"key {first} is already published as next" in str(refused)
    assert ring.published_kids() == [ring.active_kid, first]
    assert len(ring.endorsements) == 1
