"""Runs of their own on a shared stack: a scratch PostgreSQL database and a claimed Redis logical database.

The test suite, the demo, the chaos scenarios and the benches never write where the user's services keep
their data (DESIGN, invariant 7). Each opens a sandbox: a database ``<user's database>_<suffix>`` created
here (marked by a comment, so only databases created here are ever dropped or emptied) and migrated, and a
Redis logical database claimed with an owner key (so two runs never share one). The sandbox's ``config``
and ``env`` point every client and every child process there; topics stay namespaced by the caller
(``Config.namespaced``). Closing drops the database and flushes and releases the Redis database.

On Redis Cluster (a ``redis+cluster://`` URL), which has only database 0, the Redis side is the process's
key namespace instead (``ADP_REDIS_NAMESPACE``, set before the process starts; ``adplatform.names``):
claimed the same way by an owner key inside it, emptied by deleting that prefix's keys on every master
(``adplatform.sandbox_cluster``). A process has one namespace, so a sandbox on a cluster cannot be opened
inside another (a demo or chaos run inside a test session): that is refused.

Claims: a process-bound owner (``proc:host:pid:start-time:label``) may be taken over once that process is
gone (a test session killed mid-run leaves nothing that blocks the next one); a named owner
(``name:<database>``, the demo's, kept until ``make demo-down``) only by the same name. A database notes
its owner in its comment too, so opening a sandbox first drops the databases and releases the Redis
databases of process-bound owners on this host whose process is gone (``prune_stale``, ``release_stale``):
a killed run's stores do not pile up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis
from asyncpg.pool import PoolConnectionProxy
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from adplatform import names, sandbox_cluster
from adplatform.config import Config, load_config
from adplatform.migrate import migrate_dsn
from adplatform.postgres import quote_ident, quote_literal, truncate_statement
from adplatform.redis_client import is_cluster_url, open_redis

#: The comment on every database created here; nothing without it is ever dropped or emptied here.
MARKER: Final = "adplatform sandbox"
#: Between the marker and the owner in a sandbox database's comment.
_OWNER_SEP: Final = "; owner="
#: The owner key of a claimed Redis database (it lives in that database, so FLUSHDB re-sets it).
CLAIM_KEY: Final = "adp:sandbox:owner"
T = TypeVar("T")
logger = logging.getLogger(__name__)
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")

# KEYS: claim key. ARGV: my owner, an owner that may be taken over ('' none). An empty database without
# an owner is free; a database with data but no owner belongs to someone else and is never touched.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if not owner then
  if redis.call('DBSIZE') > 0 then return 0 end
elseif owner == ARGV[1] or owner == ARGV[2] then
  redis.call('FLUSHDB')
else
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
# KEYS: claim key. ARGV: my owner, 1 to keep the claim. Flushes only a database this owner holds.
_FLUSH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('FLUSHDB')
if ARGV[2] == '1' then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
# KEYS: claim key. Redis losing its data, as a fault run simulates it: only in a claimed database, and
# the claim survives (it is the sandbox's, not the data's).
_WIPE = """
local owner = redis.call('GET', KEYS[1])
if not owner then return 0 end
redis.call('FLUSHDB')
redis.call('SET', KEYS[1], owner)
return 1
"""


class SandboxError(RuntimeError):
    """A sandbox could not be created, or an operation would touch data no sandbox created."""


@dataclass(frozen=True)
class Sandbox:
    """A run's own PostgreSQL database and Redis logical database (on Redis Cluster: key namespace);
    ``config`` points there."""

    config: Config
    #: The config it was opened from (the user's database and Redis database).
    base: Config
    database: str
    #: 0 on Redis Cluster, where ``redis_namespace`` isolates instead.
    redis_db: int
    owner: str
    redis_namespace: str = ""

    @property
    def env(self) -> dict[str, str]:
        """The variables that point a child process at this sandbox."""
        env = {"ADP_PG_DSN": self.config.pg_dsn, "ADP_REDIS_URL": self.config.redis_url}
        if self.redis_namespace:
            env[names.NAMESPACE_ENV] = self.redis_namespace
        return env

    @property
    def redis_label(self) -> str:
        """The Redis side, for messages."""
        if self.redis_namespace:
            return f"Redis namespace {names.REDIS_PREFIX}"
        return f"Redis database {self.redis_db}"


def database_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/") or "postgres"


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def redis_db_of(url: str) -> int:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    raw = query.get("db") or parts.path.lstrip("/") or "0"
    return int(raw)


def with_redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "db"])
    return urlunsplit(parts._replace(path=f"/{db}", query=query))


def _client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=True)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _admin_dsn(dsn: str) -> str:
    # The maintenance database, as devstack uses it: a database cannot be dropped from inside itself.
    return with_database(dsn, "postgres")


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise SandboxError(f"not a sandbox database name: {name!r} (lower-case letters, digits, _)")
    return name


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, after the command name (which may hold spaces)


def process_owner(label: str) -> str:
    """An owner bound to this process: free to take over once the process is gone."""
    return f"proc:{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}:{label}"


def owner_state(owner: str | None) -> str:
    """Whose a sandbox is, in a word (see ``Listing.state``): ``gone`` is a process-bound owner on this
    host whose process is gone (or is another process by now)."""
    if owner is None:
        return "unknown"
    if owner.startswith("name:"):
        return "named"
    parts = owner.split(":", 4)
    if len(parts) != 5 or parts[0] != "proc" or not parts[2].isdigit():
        return "unknown"
    if parts[1] != socket.gethostname():
        return "other host"
    return "gone" if _start_time(int(parts[2])) != parts[3] else "running"


def _stale(owner: str) -> bool:
    return owner_state(owner) == "gone"


def new_suffix(kind: str) -> str:
    """``kind`` and a random tag: a database name no other run has."""
    return f"{kind}_{uuid.uuid4().hex[:8]}"


# --- PostgreSQL ---------------------------------------------------------------------------------------


async def _marked(conn: asyncpg.Connection, database: str) -> bool | None:
    """None: no such database; else whether it carries the sandbox marker."""
    row = await conn.fetchrow(
        "SELECT shobj_description(oid, 'pg_database') AS note FROM pg_database WHERE datname = $1", database
    )
    if row is None:
        return None
    return bool(row["note"] and str(row["note"]).startswith(MARKER))


def _note(owner: str) -> str:
    """A sandbox database's comment: the marker, then who created it (``owner_of_note`` reads it back)."""
    return f"{MARKER}{_OWNER_SEP}{owner}" if owner else MARKER


def owner_of_note(note: str | None) -> str | None:
    """The owner a sandbox database's comment names; None for no sandbox or one made before owners were
    recorded (never pruned: nothing tells whose it was)."""
    if not note or not note.startswith(MARKER + _OWNER_SEP):
        return None
    return note[len(MARKER + _OWNER_SEP) :]


async def create_database(base_dsn: str, database: str, *, owner: str = "") -> str:
    """Create (replacing a sandbox of that name) and migrate ``database``, noting ``owner`` in its comment
    (so a process-bound one is pruned once its process is gone); returns its DSN."""
    name = _check_name(database)
    if database == database_of(base_dsn):
        raise SandboxError(f"refusing to use the configured database {database!r} as a sandbox")
    admin = await asyncpg.connect(_admin_dsn(base_dsn), timeout=10)
    try:
        if await _marked(admin, database) is not None:
            await _drop(admin, database)
        # CREATE DATABASE and COMMENT take no parameters: the name is checked above and quoted, the note
        # quoted as a literal.
        await admin.execute(f"CREATE DATABASE {quote_ident(name)}")
        await admin.execute(f"COMMENT ON DATABASE {quote_ident(name)} IS {quote_literal(_note(owner))}")
    finally:
        await admin.close()
    dsn = with_database(base_dsn, database)
    await migrate_dsn(dsn)
    return dsn


async def _drop(admin: asyncpg.Connection, database: str) -> bool:
    marked = await _marked(admin, database)
    if marked is None:
        return False
    if not marked:
        raise SandboxError(f"refusing to drop database {database!r}: it was not created as a sandbox")
    await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(_check_name(database))} WITH (FORCE)")
    return True


async def drop_database(base_dsn: str, database: str) -> bool:
    """Drop a sandbox database (False: there was none); refuses any database without the marker."""
    admin = await asyncpg.connect(_admin_dsn(base_dsn), timeout=10)
    try:
        return await _drop(admin, database)
    finally:
        await admin.close()


async def drop_derived(base_dsn: str, database: str) -> list[str]:
    """Drop every sandbox database named ``<database>_…`` (a demo or chaos run inside a test session)."""
    admin = await asyncpg.connect(_admin_dsn(base_dsn), timeout=10)
    try:
        names = [
            r["datname"]
            for r in await admin.fetch(
                "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", f"{database}_"
            )
        ]
        return [n for n in names if await _marked(admin, n) and await _drop(admin, n)]
    finally:
        await admin.close()


async def _derived(admin: asyncpg.Connection, prefix: str) -> list[asyncpg.Record]:
    """The databases named ``prefix…``, with their comment and how many connections each has."""
    return await admin.fetch(
        "SELECT d.datname, shobj_description(d.oid, 'pg_database') AS note,"
        " (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid) AS connections"
        " FROM pg_database d WHERE starts_with(d.datname, $1) ORDER BY d.datname",
        prefix,
    )


async def prune_stale(base_dsn: str) -> list[str]:
    """Drop every sandbox database ``<configured database>_…`` left by a run on this host whose process is
    gone (killed mid-run: its tear-down never ran) and that nobody is connected to; returns their names.
    A named sandbox (the demo's), one of another host, or one made before owners were noted is kept."""
    prefix = f"{database_of(base_dsn)}_"
    admin = await asyncpg.connect(_admin_dsn(base_dsn), timeout=10)
    dropped: list[str] = []
    try:
        rows = await _derived(admin, prefix)
        for row in rows:
            owner = owner_of_note(row["note"])
            if owner is None or not _stale(owner) or row["connections"]:
                continue
            try:
                # Without FORCE: a connection made since the look above (an orphaned child of the run,
                # still alive) makes the drop fail, and the database stays.
                await admin.execute(f"DROP DATABASE {quote_ident(_check_name(row['datname']))}")
            except (asyncpg.ObjectInUseError, asyncpg.InvalidCatalogNameError, SandboxError):
                continue
            dropped.append(row["datname"])
    finally:
        await admin.close()
    for name in dropped:
        logger.warning("dropped stale sandbox database %s (its run's process is gone)", name)
    return dropped


async def truncate_sandbox(conn: asyncpg.Connection | asyncpg.Pool | PoolConnectionProxy) -> None:
    """Empty every ``online_ads`` table of the connected database, which must be a sandbox."""
    database = await conn.fetchval("SELECT current_database()")
    marked = await conn.fetchval(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()"
    )
    if not (marked and str(marked).startswith(MARKER)):
        raise SandboxError(f"refusing to empty database {database!r}: it was not created as a sandbox")
    tables = [
        r["tablename"]
        for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'online_ads'")
    ]
    if tables:
        await conn.execute(truncate_statement("online_ads", tables))


# --- Redis --------------------------------------------------------------------------------------------


async def _databases(client: aioredis.Redis) -> int:
    try:
        reply = await client.config_get("databases")
        return int(reply.get("databases") or 16)
    except (ResponseError, ValueError):  # CONFIG renamed or disabled: Redis's default
        return 16


def _cluster(url: str) -> RedisCluster:
    client = open_redis(url, decode_responses=True, socket_timeout=10)
    assert isinstance(client, RedisCluster)
    return client


async def _survey(base_url: str) -> tuple[int, Counter[int] | None]:
    """How many logical databases the server has, and how many other clients each is connected to
    (``CLIENT LIST``; None where the server refuses it to this user, an ACL: then nobody's use can be
    told)."""
    probe = _client(base_url)
    try:
        count = await _databases(probe)
        try:
            me = await probe.client_id()
            clients = await probe.client_list()
        except ResponseError:
            return count, None
        return count, Counter(int(c["db"]) for c in clients if int(c["id"]) != me)
    finally:
        await probe.aclose()


async def claim_namespace(base_url: str, owner: str) -> str:
    """Claim this process's key namespace on the Redis Cluster at ``base_url`` for ``owner``; its name."""
    if not names.NAMESPACE:
        raise SandboxError(
            f"a sandbox on Redis Cluster is a key namespace: set {names.NAMESPACE_ENV} before the process "
            "starts (Redis Cluster has only database 0)"
        )
    client = _cluster(base_url)
    try:
        current = await sandbox_cluster.owner_of(client)
        takeover = current if current is not None and _stale(current) else ""
        if await sandbox_cluster.claim(client, owner, takeover):
            return names.NAMESPACE
    finally:
        await client.aclose()
    held = f"held by {current}" if current else "holds keys but has no owner"
    raise SandboxError(f"Redis namespace {names.REDIS_PREFIX} is {held}: not {owner}'s to use")


async def claim_redis_db(base_url: str, owner: str) -> int:
    """Claim a free logical database (never the configured one, never 0) for ``owner``; its number."""
    avoid = {0, redis_db_of(base_url)}
    count, in_use = await _survey(base_url)
    held = await find_claim(base_url, owner)  # a named owner re-opens its own database first
    # From the top: users who pick a database besides 0 pick low numbers.
    candidates: list[int] = ([held] if held is not None else []) + list(range(count - 1, 0, -1))
    for db in candidates:
        # One a client is connected to is never claimed (someone's service, maybe with no keys yet) nor
        # taken over (an orphaned server of a killed run still writing there); the owner's own is re-opened.
        if db in avoid or (db in (in_use or ()) and db != held):
            continue
        client = _client(with_redis_db(base_url, db))
        try:
            current = _text(await client.get(CLAIM_KEY))
            takeover = current if current is not None and _stale(current) else ""
            if await client.eval(_CLAIM, 1, CLAIM_KEY, owner, takeover) == 1:
                return db
        except ResponseError:  # DB index out of range: fewer databases than CONFIG said
            break
        finally:
            await client.aclose()
    raise SandboxError(f"no free Redis logical database on {base_url.rsplit('@', 1)[-1]} for {owner}")


async def flush_redis_db(url: str, owner: str, *, keep_claim: bool) -> bool:
    """FLUSHDB the database at ``url`` only if ``owner`` holds it (keeping the claim, or releasing it); on
    Redis Cluster, the same for this process's key namespace."""
    if is_cluster_url(url):
        cluster = _cluster(url)
        try:
            return await sandbox_cluster.flush(cluster, owner, keep_claim=keep_claim)
        finally:
            await cluster.aclose()
    client = _client(url)
    try:
        return bool(await client.eval(_FLUSH, 1, CLAIM_KEY, owner, "1" if keep_claim else "0") == 1)
    finally:
        await client.aclose()


async def wipe_claimed(client: aioredis.Redis | RedisCluster) -> None:
    """FLUSHDB a claimed database but keep its claim (a fault run's "Redis lost its data"; on Redis
    Cluster, every key of the claimed namespace but its claim); refuses a database no sandbox claimed."""
    if isinstance(client, RedisCluster):
        if not await sandbox_cluster.wipe(client):
            raise SandboxError("refusing to empty a Redis namespace no sandbox claimed")
        return
    if await client.eval(_WIPE, 1, CLAIM_KEY) != 1:
        raise SandboxError("refusing to flush a Redis database no sandbox claimed")


async def release_stale(base_url: str) -> list[str]:
    """Flush and release every Redis logical database claimed by a run on this host whose process is gone
    (on Redis Cluster: empty and release every such namespace); what was released, for messages."""
    released: list[str] = []
    if is_cluster_url(base_url):
        cluster = _cluster(base_url)
        try:
            prefixes = await sandbox_cluster.release_stale(cluster, _stale)
        finally:
            await cluster.aclose()
        released = [f"namespace {prefix}" for prefix in prefixes]
    else:
        # A database a client is still connected to (an orphaned server of the killed run) is kept; when
        # that cannot be told, every one is.
        count, in_use = await _survey(base_url)
        unused = [] if in_use is None else [db for db in range(1, count) if db not in in_use]
        for db in unused:
            client = _client(with_redis_db(base_url, db))
            try:
                owner = _text(await client.get(CLAIM_KEY))
                # The script flushes only while that owner holds it: a run taking it over meanwhile wins.
                if owner and _stale(owner) and await client.eval(_FLUSH, 1, CLAIM_KEY, owner, "0") == 1:
                    released.append(f"database {db}")
            except ResponseError:  # DB index out of range: fewer databases than CONFIG said
                break
            finally:
                await client.aclose()
    for what in released:
        logger.warning("released stale sandbox Redis %s (its run's process is gone)", what)
    return released


async def find_claim(base_url: str, owner: str) -> int | None:
    """The logical database ``owner`` holds, if any (0 on Redis Cluster when it holds the namespace)."""
    if is_cluster_url(base_url):
        cluster = _cluster(base_url)
        try:
            return 0 if names.NAMESPACE and await sandbox_cluster.owner_of(cluster) == owner else None
        finally:
            await cluster.aclose()
    probe = _client(base_url)
    try:
        count = await _databases(probe)
    finally:
        await probe.aclose()
    for db in range(1, count):
        client = _client(with_redis_db(base_url, db))
        try:
            value = _text(await client.get(CLAIM_KEY))
        finally:
            await client.aclose()
        if value == owner:
            return db
    return None


# --- what is there: listing and pruning ---------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """One sandbox's store, as ``adplatform sandbox list`` shows it."""

    #: ``database`` (PostgreSQL) or ``redis`` (a logical database, or a namespace on Redis Cluster).
    kind: str
    name: str
    #: Its owner as noted; None for a database made before owners were noted.
    owner: str | None
    #: ``running``, ``gone`` (the run's process exited without its tear-down), ``named`` (kept until its
    #: owner closes it: the demo's), ``other host`` or ``unknown``.
    state: str
    #: Clients connected to it (None: cannot be told, a namespace's).
    connections: int | None


async def sandbox_databases(base: Config) -> list[Listing]:
    """Every sandbox database derived from the configured database, by name."""
    admin = await asyncpg.connect(_admin_dsn(base.pg_dsn), timeout=10)
    try:
        rows = await _derived(admin, f"{database_of(base.pg_dsn)}_")
    finally:
        await admin.close()
    return [
        Listing("database", r["datname"], owner_of_note(r["note"]), owner_state(owner_of_note(r["note"])),
                int(r["connections"]))
        for r in rows
        if r["note"] and str(r["note"]).startswith(MARKER)
    ]  # fmt: skip


async def list_sandboxes(base: Config) -> list[Listing]:
    """Every sandbox database derived from the configured database, and every claimed Redis database (on
    Redis Cluster, namespace), by name within each kind."""
    found = await sandbox_databases(base)
    if is_cluster_url(base.redis_url):
        cluster = _cluster(base.redis_url)
        try:
            claims = await sandbox_cluster.claims(cluster)
        finally:
            await cluster.aclose()
        found += [
            Listing("redis", f"namespace {p}", o, owner_state(o), None) for p, o in sorted(claims.items())
        ]
        return found
    count, in_use = await _survey(base.redis_url)
    for db in range(1, count):
        client = _client(with_redis_db(base.redis_url, db))
        try:
            owner = _text(await client.get(CLAIM_KEY))
        except ResponseError:  # DB index out of range: fewer databases than CONFIG said
            break
        finally:
            await client.aclose()
        if owner is not None:
            connected = None if in_use is None else in_use[db]
            found.append(Listing("redis", f"database {db}", owner, owner_state(owner), connected))
    return found


async def drop_sandbox(base: Config, database: str) -> str | None:
    """Drop sandbox database ``database`` (refused without the marker, or while its run is going) and
    flush and release the Redis logical database its owner holds, if any; that Redis database, for messages
    (none on Redis Cluster, where a namespace is released by ``prune`` once its run is gone)."""
    admin = await asyncpg.connect(_admin_dsn(base.pg_dsn), timeout=10)
    try:
        note = await admin.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", database
        )
        owner = owner_of_note(note)
        if owner_state(owner) == "running":
            raise SandboxError(f"refusing to drop {database}: its run is still going ({owner})")
        if not await _drop(admin, database):
            raise SandboxError(f"no database {database!r}")
    finally:
        await admin.close()
    if owner is None or is_cluster_url(base.redis_url):
        return None
    db = await find_claim(base.redis_url, owner)
    if db is None or not await flush_redis_db(with_redis_db(base.redis_url, db), owner, keep_claim=False):
        return None
    return f"database {db}"


async def prune(base: Config) -> list[str]:
    """What opening a sandbox does first, on its own (``adplatform sandbox prune``): drop the databases and
    release the Redis databases of runs on this host whose process is gone; what went, for messages."""
    released = await release_stale(base.redis_url)
    dropped = await prune_stale(base.pg_dsn)
    return [f"database {name}" for name in dropped] + [f"Redis {what}" for what in released]


# --- the whole sandbox --------------------------------------------------------------------------------


async def open_sandbox(base: Config, suffix: str, *, owner: str | None = None) -> Sandbox:
    """Create ``<base database>_<suffix>`` and claim a Redis database. ``owner`` None: bound to this
    process; a name (the demo's) re-opens, emptied, what that name held before."""
    database = f"{database_of(base.pg_dsn)}_{suffix}"
    owner = owner or process_owner(database)
    cluster = is_cluster_url(base.redis_url)
    await prune(base)  # what runs killed mid-run left behind (their tear-down never ran) goes first
    if cluster:
        namespace, redis_db, redis_url = await claim_namespace(base.redis_url, owner), 0, base.redis_url
    else:
        redis_db = await claim_redis_db(base.redis_url, owner)
        namespace, redis_url = "", with_redis_db(base.redis_url, redis_db)
    try:
        dsn = await create_database(base.pg_dsn, database, owner=owner)
    except BaseException:
        await flush_redis_db(redis_url, owner, keep_claim=False)
        raise
    config = replace(base, pg_dsn=dsn, redis_url=redis_url)
    return Sandbox(
        config=config, base=base, database=database, redis_db=redis_db, owner=owner, redis_namespace=namespace
    )


def named_owner(base: Config, suffix: str) -> str:
    """The owner of a sandbox kept past its process (the demo's), by its database name."""
    return f"name:{database_of(base.pg_dsn)}_{suffix}"


async def clean_sandbox(sandbox: Sandbox) -> None:
    """Empty the sandbox's tables and its Redis database (keeping the claim): a test's fresh start."""
    conn = await asyncpg.connect(sandbox.config.pg_dsn, timeout=10)
    try:
        await truncate_sandbox(conn)
    finally:
        await conn.close()
    if not await flush_redis_db(sandbox.config.redis_url, sandbox.owner, keep_claim=True):
        raise SandboxError(f"{sandbox.redis_label} is no longer held by {sandbox.owner}")


async def close_sandbox(sandbox: Sandbox) -> None:
    """Drop the database (and any sandbox derived from it), flush and release the Redis database (and
    any held by a sandbox derived from it)."""
    await drop_derived(sandbox.base.pg_dsn, sandbox.database)
    await drop_database(sandbox.base.pg_dsn, sandbox.database)
    await release_named(sandbox.config, prefix=sandbox.database + "_")
    await flush_redis_db(sandbox.config.redis_url, sandbox.owner, keep_claim=False)


async def release_named(base: Config, *, prefix: str) -> list[int]:
    """Flush and release every Redis database held by a named owner ``name:<prefix>…`` (none on Redis
    Cluster, where a process has one namespace and so no sandbox derived from its own)."""
    if is_cluster_url(base.redis_url):
        return []
    probe = _client(base.redis_url)
    try:
        count = await _databases(probe)
    finally:
        await probe.aclose()
    released: list[int] = []
    for db in range(1, count):
        url = with_redis_db(base.redis_url, db)
        client = _client(url)
        try:
            value = _text(await client.get(CLAIM_KEY))
        finally:
            await client.aclose()
        owner = value or ""
        if owner.startswith(f"name:{prefix}") and await flush_redis_db(url, owner, keep_claim=False):
            released.append(db)
    return released


async def close_named(base: Config, suffix: str) -> tuple[bool, int | None]:
    """Close a named sandbox (``make demo-down``): (database dropped, Redis database released)."""
    owner = named_owner(base, suffix)
    dropped = await drop_database(base.pg_dsn, f"{database_of(base.pg_dsn)}_{suffix}")
    db = await find_claim(base.redis_url, owner)
    if db is not None:
        await flush_redis_db(with_redis_db(base.redis_url, db), owner, keep_claim=False)
    return dropped, db


def _in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a loop of its own in another thread (the caller may own an event loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@contextlib.contextmanager
def sandbox_environment(kind: str) -> Iterator[Sandbox]:
    """Stores of its own for a command-line run (a bench) and every process it starts: the environment
    points there while the block runs; they are dropped when it ends."""
    sandbox = _in_thread(open_sandbox(load_config(), new_suffix(kind)))
    saved = {name: os.environ.get(name) for name in sandbox.env}
    os.environ.update(sandbox.env)
    try:
        yield sandbox
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _in_thread(close_sandbox(sandbox))
