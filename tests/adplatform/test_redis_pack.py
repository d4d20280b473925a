"""``FastPackConnection.pack_command`` puts on the wire exactly the bytes redis-py's own packer does, for
the arguments it packs itself and for those it leaves to redis-py (no server needed)."""

from __future__ import annotations

import enum

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError
from redis.typing import EncodableT

from adplatform.redis_client import FastPackConnection, open_bounded, open_redis


class Color(enum.IntEnum):
    RED = 1


CASES: list[tuple[EncodableT, ...]] = [
    ("PING",),
    ("EVALSHA", "a" * 40, 3, "adp:blocked", "adp:camp:{c1}", "adp:dedup:{c1}:ab:click", 17, 30, -5, 0, 2**70),
    ("SET", "k", b"\x00\xff binary", "px", 60_000),
    ("SET", "k", "ünïcode ✓", "nx"),
    ("SET", "k", ""),
    ("SET", "k", "v" * 7000),  # over the chunking cutoff: a chunk of its own
    ("SET", "k", b"v" * 7000),
    ("SET", "k", memoryview(b"view")),
    ("SET", "k", bytearray(b"array")),
    ("SET", "k", 1.5),
    ("SET", "k", Color.RED),  # an IntEnum: redis-py packs its repr
    ("CONFIG GET", "maxmemory"),
    ("CLIENT SETINFO", "LIB-NAME", "x"),
    ("HSET", "h", *[f"f{i}" for i in range(2000)]),  # many short arguments past the cutoff in total
]


@pytest.mark.parametrize("args", CASES)
def test_same_bytes_as_redis_py(args: tuple[EncodableT, ...]) -> None:
    ours = FastPackConnection().pack_command(*args)
    theirs = aioredis.Connection().pack_command(*args)
    assert b"".join(bytes(c) for c in ours) == b"".join(bytes(c) for c in theirs)


def test_refuses_what_redis_py_refuses() -> None:
    for value in (True, None, object()):
        with pytest.raises(DataError):
            FastPackConnection().pack_command("SET", "k", value)  # type: ignore[arg-type]  # (refused)


def test_plain_urls_connect_with_it() -> None:
    bounded = open_bounded("redis://127.0.0.1:1/0", max_connections=2, timeout_s=1, socket_timeout_s=1,
                           connect_timeout_s=1)  # fmt: skip
    plain = open_redis("redis://127.0.0.1:1/0")
    assert isinstance(bounded, aioredis.Redis) and isinstance(plain, aioredis.Redis)
    assert bounded.connection_pool.connection_class is FastPackConnection
    assert plain.connection_pool.connection_class is FastPackConnection
    tls = open_redis("rediss://127.0.0.1:1/0")
    assert isinstance(tls, aioredis.Redis)
    assert tls.connection_pool.connection_class is aioredis.SSLConnection
