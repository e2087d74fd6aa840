"""The Redis users of docs/operations.md ("Redis users"), as extauthz.dev.redis runs them, against a
real redis-server: the gateways' user reaches keymint's keys and channels only, the signers' user
reads revocations and listens for them and nothing else, and the default user is off."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from extauthz.dev.redis import RedisProcess, write_credentials

PASSWORDS = {"gateway": "gateway-test-password", "signer": "signer-test-password"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path_factory.mktemp("redis"), PASSWORDS)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def client(server: RedisProcess, user: str) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, username=user, password=PASSWORDS[user])


def refused(call: Callable[[], object]) -> bool:
    try:
        call()
    except redis.exceptions.NoPermissionError:
        return True
    return False


def test_the_gateways_user_reaches_keymint_keys_and_channels_only(server: RedisProcess) -> None:
    gateway = client(server, "gateway")
    assert gateway.set("keymint:probe", "1")
    assert gateway.get("keymint:probe") == b"1"
    assert gateway.publish("keymint:events", "probe") == 0
    assert refused(lambda: gateway.set("elsewhere:probe", "1"))
    assert refused(lambda: gateway.get("elsewhere:probe"))
    assert refused(lambda: gateway.publish("elsewhere", "probe"))
    assert refused(lambda: gateway.config_get("dir"))
    assert refused(lambda: gateway.acl_list())
    # Commands that take no key escape the key pattern: -@dangerous takes them away.
    assert refused(lambda: gateway.flushall())
    assert refused(lambda: gateway.flushdb())
    assert refused(lambda: gateway.keys("*"))
    assert gateway.exists("keymint:probe") == 1


def test_the_signers_user_reads_revocations_and_listens_for_them_only(
    server: RedisProcess,
) -> None:
    server.admin().zadd("keymint:revoked:subjects", {"spiffe://prod.test/x": 1})
    signer = client(server, "signer")
    assert signer.zrangebyscore("keymint:revoked:subjects", 0, 2) == [b"spiffe://prod.test/x"]
    assert signer.get("keymint:revoked:probe") is None
    listener = signer.pubsub()
    listener.subscribe("keymint:events")
    assert listener.get_message(timeout=5) is not None  # the subscription's confirmation
    listener.close()
    assert refused(lambda: signer.set("keymint:revoked:probe", "1"))
    assert refused(lambda: signer.zadd("keymint:revoked:subjects", {"y": 1}))
    assert refused(lambda: signer.get("keymint:probe"))
    assert refused(lambda: signer.publish("keymint:events", "probe"))
    other = signer.pubsub()
    other.subscribe("elsewhere")  # sent; the refusal is the answer read next
    assert refused(lambda: other.get_message(timeout=5))
    other.close()


def test_the_default_user_is_off_and_a_wrong_password_is_refused(server: RedisProcess) -> None:
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=server.port).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=server.port, username="gateway", password="wrong").ping()


def test_a_user_without_a_rule_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no ACL for Redis users"):
        RedisProcess(tmp_path, {"gateway": "x", "operator": "y"})
    assert list(tmp_path.iterdir()) == []


def test_a_credentials_file_is_the_users_and_its_owners_only(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "redis.credentials", "gateway", "secret")
    assert path.read_text() == "gateway:secret"
    assert path.stat().st_mode & 0o777 == 0o600
