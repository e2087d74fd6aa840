"""Key ceremonies among running signers: DKG, refresh, reshare, and a development dealer install.

One driver (an operator's command, or the demo) talks to each signer's ceremony service over mTLS
and relays the ceremony's messages, without being able to read or alter the private ones:

- `wire`: the ceremony's parameters and the encodings of what participants broadcast.
- `envelope`: statements signed with each signer's mTLS key; shares sealed between per-ceremony
  X25519 keys.
- `checks`: what anyone can check from public messages (the driver included).
- `participant`: one signer's side of a ceremony, sans-IO.
- `service`: that participant behind gRPC, in each signer process.
- `driver`: the client that runs a ceremony over the signers; `cli`: its commands.

No machine ever holds the group secret, except in `deal`, which says so loudly.
"""

from signer.ceremony.driver import CeremonyDriver, CeremonyResult, connect
from signer.ceremony.errors import CeremonyError, CeremonyFailed, CommitIncomplete
from signer.ceremony.service import CeremonyServicer, add_to_server

__all__ = [
    "CeremonyDriver",
    "CeremonyError",
    "CeremonyFailed",
    "CeremonyResult",
    "CeremonyServicer",
    "CommitIncomplete",
    "add_to_server",
    "connect",
]
