"""One answer to "is this failure worth retrying?" for every retry loop and reconnecting listener.

A failure is retriable when waiting can clear it: a dependency restarting, a dropped connection, a
timeout, a partition leader moving. Everything else (authorization, a record too large, a constraint
violation, a closed pool) never clears by itself, so a loop that retried it would spin forever: it is raised
instead. Kafka errors say so themselves (aiokafka's ``retriable`` attribute); PostgreSQL, Redis and socket
errors are named here, by class (and by SQLSTATE class for PostgreSQL).
"""

from __future__ import annotations

import errno
import socket
from typing import Final

import asyncpg
import redis.exceptions as redis_errors
from aiokafka.errors import KafkaError, KafkaTimeoutError, KafkaUnavailableError

#: aiokafka marks these not retriable, yet each means "no answer in time" or "no broker now": a broker
#: restart produces exactly these, and they clear when it is back.
_KAFKA_TRANSIENT: Final = (KafkaTimeoutError, KafkaUnavailableError)

#: PostgreSQL's "connection exception" class (SQLSTATE 08) and the server's own restarts and limits.
_PG_TRANSIENT: Final = (
    asyncpg.exceptions.PostgresConnectionError,  # includes ConnectionDoesNotExistError (08003)
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.exceptions.AdminShutdownError,  # 57P01
    asyncpg.exceptions.CrashShutdownError,  # 57P02
    asyncpg.exceptions.IdleSessionTimeoutError,  # 57P05: the server closed an idle session
    asyncpg.exceptions.TooManyConnectionsError,  # 53300
)
#: 08P01: the peer speaks something else; retrying sends the same bytes again.
_PG_PERMANENT: Final = (asyncpg.exceptions.ProtocolViolationError,)

#: redis-py's ConnectionError family includes refused credentials, which never clear by waiting.
_REDIS_PERMANENT: Final = (
    redis_errors.AuthenticationError,
    redis_errors.AuthorizationError,
    redis_errors.ExternalAuthProviderError,
)

#: Socket errno values that describe the network or the peer, not the request.
_NET_ERRNOS: Final = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.ENETRESET,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.EADDRNOTAVAIL,
    }
)


def is_retriable(exc: BaseException) -> bool:
    """Whether ``exc`` may clear by itself, so the operation that raised it is worth running again."""
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, _KAFKA_TRANSIENT)
    if isinstance(exc, asyncpg.PostgresError):
        return isinstance(exc, _PG_TRANSIENT) and not isinstance(exc, _PG_PERMANENT)
    if isinstance(exc, asyncpg.InterfaceError):
        # asyncpg has no class for a connection the server dropped under a handle, only messages ending so
        # ("connection is closed", "cannot call Transaction.__aexit__(): the underlying connection is
        # closed"); "pool is closed" and misuse ("another operation is in progress") never clear.
        return str(exc).endswith("connection is closed")
    if isinstance(exc, redis_errors.RedisError):
        return isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError) and not isinstance(
            exc, _REDIS_PERMANENT
        )
    if isinstance(exc, OSError):
        return _is_network_os_error(exc)
    return False


def _is_network_os_error(exc: OSError) -> bool:
    # TimeoutError is asyncio.TimeoutError too (3.11), the builtin ConnectionError covers refused, reset,
    # aborted and broken pipe.
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if isinstance(exc, socket.gaierror):
        return exc.errno == socket.EAI_AGAIN  # the resolver is down; an unknown host stays unknown
    if exc.errno in _NET_ERRNOS:
        return True
    # asyncio's create_connection, when every address of a host failed differently, raises one bare
    # OSError without errno listing them (e.g. localhost on ::1 and 127.0.0.1, both refused).
    return type(exc) is OSError and exc.errno is None and str(exc).startswith("Multiple exceptions:")


#: The platform's services, by the top-level package of their client library.
_CLIENT_PACKAGES: Final = {"aiokafka": "kafka", "asyncpg": "postgres", "redis": "redis"}


def service_of(exc: BaseException) -> str | None:
    """Which service (``"kafka"``, ``"postgres"`` or ``"redis"``) ``exc`` comes from: by the error's class,
    else by the deepest frame of that service's client library in its traceback (a bare ``OSError`` or
    ``TimeoutError`` from a connect), looking through its causes too; ``None`` when none is involved."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        package = _CLIENT_PACKAGES.get(type(current).__module__.split(".")[0])
        if package is None:
            tb, frames = current.__traceback__, []
            while tb is not None:
                frames.append(tb.tb_frame.f_globals.get("__name__", "").split(".")[0])
                tb = tb.tb_next
            package = next((_CLIENT_PACKAGES[m] for m in reversed(frames) if m in _CLIENT_PACKAGES), None)
        if package is not None:
            return package
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None


def unreachable_service(exc: BaseException) -> tuple[str, BaseException] | None:
    """``(service, failure)`` when ``exc`` (or, for an exception group, one of its errors) says a service
    could not be reached: a failure that waiting may clear (``is_retriable``) or an unknown host, raised
    by that service's client. ``None`` for every other error (a bug, a refused password...)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = unreachable_service(inner)
            if found is not None:
                return found
        return None
    if not (is_retriable(exc) or isinstance(exc, socket.gaierror)):
        return None
    service = service_of(exc)
    return None if service is None else (service, exc)


def connection_reason(exc: BaseException) -> str:
    """A few words on why a connection failed, from the failure or what caused it (its ``__cause__``,
    ``__context__`` or, for urllib, ``reason``): for the one-line messages of the CLI and its clients."""
    current: BaseException | None = exc
    while current is not None:
        if (
            isinstance(current, ConnectionRefusedError)
            or getattr(current, "errno", None) == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(current, socket.gaierror):
            return "host not found"
        if isinstance(current, TimeoutError):
            return "no answer in time"
        if isinstance(current, ConnectionResetError):
            return "connection reset"
        if type(current).__name__ == "KafkaConnectionError":
            return "no broker answered"
        nested = getattr(current, "reason", None)  # urllib.error.URLError wraps the socket's error
        current = nested if isinstance(nested, BaseException) else current.__cause__ or current.__context__
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "Multiple exceptions" in text or "Connect call failed" in text:
        return "connection refused"
    return text[:100]
