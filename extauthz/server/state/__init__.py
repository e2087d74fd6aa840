"""Shared state for gateway replicas and workers: revocations, rate-limit buckets, the key ring.

`StateStore` is what a store offers; `RedisStore` (KEYMINT_REDIS_URL) shares it between replicas,
`LocalStore` keeps it under KEYMINT_STATE_DIR for one replica (and its workers). `SharedState`
keeps this process's in-memory views in step with the store and says whether they are fresh.
"""

from extauthz.server.state.base import KeyRingConflict, StateStore, Versions
from extauthz.server.state.local import LocalStore
from extauthz.server.state.sync import SharedState, StateSettings

__all__ = [
    "KeyRingConflict",
    "LocalStore",
    "SharedState",
    "StateSettings",
    "StateStore",
    "Versions",
]
