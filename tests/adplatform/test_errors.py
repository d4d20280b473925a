"""``is_retriable``: the one retry decision, and ``retry()`` asking it; ``is_redis_failure``."""

from __future__ import annotations

import errno
import socket

import asyncpg
import pytest
import redis.exceptions as redis_errors
from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
)
from redis.asyncio.connection import Connection

from adplatform.consumer import retry
from adplatform.errors import is_retriable
from adplatform.redis_client import is_redis_failure

RETRIABLE: list[BaseException] = [
    KafkaConnectionError(),
    NotLeaderForPartitionError(),
    RequestTimedOutError(),
    GroupCoordinatorNotAvailableError(),
    KafkaTimeoutError(),  # aiokafka says no; a broker restart raises it and it clears
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.ConnectionFailureError("lost"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.TooManyConnectionsError("too many clients"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.InterfaceError("cannot call Transaction.__aexit__(): the underlying connection is closed"),
    asyncpg.InterfaceError("cannot perform operation: connection is closed"),
    redis_errors.ConnectionError("Connection refused"),
    redis_errors.TimeoutError("Timeout reading from socket"),
    redis_errors.BusyLoadingError("Redis is loading the dataset in memory"),
    ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
    ConnectionResetError(errno.ECONNRESET, "reset by peer"),
    BrokenPipeError(errno.EPIPE, "broken pipe"),
    TimeoutError(),  # asyncio.TimeoutError too
    OSError(errno.EHOSTUNREACH, "No route to host"),
    OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 1), [Errno 111] ..."),
    socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
]

NOT_RETRIABLE: list[BaseException] = [
    KafkaError("unexpected"),
    TopicAuthorizationFailedError(),
    MessageSizeTooLargeError(),
    RecordTooLargeError(),
    asyncpg.exceptions.UniqueViolationError("duplicate key"),
    asyncpg.exceptions.UndefinedTableError('relation "x" does not exist'),
    asyncpg.exceptions.InvalidPasswordError("password authentication failed"),
    asyncpg.exceptions.ProtocolViolationError("unexpected message"),
    asyncpg.InterfaceError("pool is closed"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    redis_errors.AuthenticationError("invalid password"),
    redis_errors.ResponseError("WRONGTYPE"),
    redis_errors.NoScriptError("NOSCRIPT"),
    FileNotFoundError(errno.ENOENT, "no such file"),
    PermissionError(errno.EACCES, "denied"),
    OSError("something else"),
    socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    ValueError("bad"),
    RuntimeError("bug"),
    KeyboardInterrupt(),
]


@pytest.mark.parametrize("exc", RETRIABLE, ids=lambda e: f"{type(e).__name__}:{e}")
def test_transient_failures_are_retriable(exc: BaseException) -> None:
    assert is_retriable(exc)


@pytest.mark.parametrize("exc", NOT_RETRIABLE, ids=lambda e: f"{type(e).__name__}:{e}")
def test_failures_that_never_clear_are_not_retriable(exc: BaseException) -> None:
    assert not is_retriable(exc)


def test_kafka_errors_are_asked_not_listed() -> None:
    class Flaky(KafkaError):  # type: ignore[misc]  # aiokafka has no type information here
        retriable = True

    assert is_retriable(Flaky()) and not is_retriable(KafkaError())


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    # retry() backs off with asyncio.sleep: record the back-off instead of waiting it.
    monkeypatch.setattr("asyncio.sleep", sleep)
    return slept


@pytest.mark.parametrize("exc", [TopicAuthorizationFailedError(), MessageSizeTooLargeError()])
async def test_retry_raises_a_non_retriable_kafka_error_at_once(
    exc: KafkaError, no_backoff: list[float]
) -> None:
    calls = 0

    async def operation() -> None:
        nonlocal calls
        calls += 1
        raise exc

    with pytest.raises(type(exc)):
        await retry(operation, what="test")
    assert calls == 1 and no_backoff == []


async def test_retry_runs_a_retriable_failure_again_until_it_clears(no_backoff: list[float]) -> None:
    failures: list[BaseException] = [KafkaConnectionError(), ConnectionResetError(), RequestTimedOutError()]
    retried = 0

    async def operation() -> str:
        if failures:
            raise failures.pop(0)
        return "done"

    def count() -> None:
        nonlocal retried
        retried += 1

    assert await retry(operation, what="test", on_retry=count) == "done"
    assert retried == 3 and no_backoff == [0.2, 0.4, 0.8]


async def test_a_redis_failure_is_any_error_of_redis_or_its_client_and_none_of_ours() -> None:
    try:  # what redis-py raises on a connection closed under a call: an AttributeError from its own code
        await Connection()._send_packed_command([b"PING"])
    except AttributeError as exc:
        inside_redis: BaseException = exc
    failures = [
        redis_errors.ConnectionError("refused"),
        redis_errors.RedisClusterException("no seed answered"),  # not a RedisError
        redis_errors.SlotNotCoveredError("slot 7 not covered"),
        TimeoutError(),
        ConnectionResetError(errno.ECONNRESET, "reset"),
        inside_redis,
    ]
    assert all(is_redis_failure(e) for e in failures)
    assert not any(is_redis_failure(e) for e in (AttributeError("ours"), ValueError("ours"), KeyError("x")))
