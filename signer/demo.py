"""`make demo` (for now): a 2-of-3 key from a DKG, and a JWT signed by two of the three shares.

Everything runs in this process, through the sans-IO core: it shows the cryptography, not the
deployment. The whole stack (signers, gateway, Envoy) joins the demo as it is built.
"""

from __future__ import annotations

import json
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from signer.frost import aggregate, commit, dkg, sign
from signer.token import compact, header_for, kid_for, signing_input


def main() -> None:
    t, n = 2, 3
    print(f"1. Distributed key generation among {n} participants, threshold {t}.")
    round1 = {i: dkg.part1(i, t, n) for i in range(1, n + 1)}
    broadcast = {i: package for i, (_, package) in round1.items()}
    private = {
        i: dkg.part2(secret, {j: p for j, p in broadcast.items() if j != i})
        for i, (secret, _) in round1.items()
    }
    keys = {
        i: dkg.part3(
            secret,
            {j: p for j, p in broadcast.items() if j != i},
            {j: private[j][i] for j in private if j != i},
        )
        for i, (secret, _) in round1.items()
    }
    package = keys[1][1]
    group_key = package.group_public_key
    print(f"   group public key {group_key.hex()}")
    print(f"   kid {kid_for(group_key)}; no participant ever held the group secret.")

    now = int(time.time())
    issuer, audience = "https://keymint.demo", "https://inventory.internal"
    claims: dict[str, str | int] = {
        "iss": issuer,
        "sub": "spiffe://example.org/ns/payments/sa/api",
        "aud": audience,
        "scope": "inventory:read",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": str(uuid.uuid4()),
    }
    message = signing_input(header_for(group_key), claims)
    for signers in ((1, 2), (1, 3), (2, 3)):
        shares = [keys[i][0] for i in signers]
        nonces = [commit(s) for s in shares]
        commitment_list = [x.commitment for x in nonces]
        sig_shares = [
            sign(s, x, message, commitment_list) for s, x in zip(shares, nonces, strict=True)
        ]
        signature = aggregate(commitment_list, message, package, sig_shares)
        token = compact(message, signature)
        decoded = jwt.decode(
            token,
            Ed25519PublicKey.from_public_bytes(group_key),
            algorithms=["EdDSA"],
            audience=audience,
            issuer=issuer,
        )
        print(
            f"2. Signers {signers} signed a token; PyJWT verifies it as EdDSA: sub={decoded['sub']}"
        )
    print("3. The last token's claims:")
    print(json.dumps(decoded, indent=2))


if __name__ == "__main__":
    main()
