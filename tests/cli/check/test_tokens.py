"""Store tokens written to history files come back equal exactly when the tokens were equal."""

from __future__ import annotations

import pytest

from arendezvous.backends.etcd import EtcdToken
from arendezvous.backends.postgres import PostgresToken
from arendezvous.backends.redis import RedisToken
from arendezvous.cli.check import DecodedToken, StoreTokenCodec


def test_store_tokens_survive_history_files() -> None:
    codec = StoreTokenCodec()
    tokens = [
        RedisToken("a" * 32, 3),
        EtcdToken(17, b"/arendezvous/run", 42),
        PostgresToken(b"\x01" * 16, 9),
    ]
    for token in tokens:
        decoded = codec.decode(codec.encode(token))
        assert isinstance(decoded, DecodedToken)
        assert decoded == codec.decode(codec.encode(token))
        assert decoded.kind.endswith(type(token).__name__)
    assert codec.decode(codec.encode(RedisToken("a" * 32, 3))) != codec.decode(
        codec.encode(RedisToken("a" * 32, 4))
    )
    assert codec.decode(codec.encode(("garbage", "c1", 5))) == ("garbage", "c1", 5)
    with pytest.raises(ValueError, match="not an encoded token"):
        codec.decode({"dataclass": "RedisToken"})


