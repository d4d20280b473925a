"""A run killed mid-run (its tear-down never ran) leaves its sandbox behind; the next sandbox opened on the
host drops that database and releases that Redis database, and nothing else: not a live run's, not one
somebody is still connected to, not the demo's named one, not one made before owners were noted, not a
database without the sandbox marker.

The killed run is a real process: it opens a sandbox and leaves with ``os._exit``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import asyncpg
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config
from adplatform.postgres import quote_literal
from adplatform.sandbox import (
    CLAIM_KEY,
    MARKER,
    SandboxError,
    claim_redis_db,
    close_sandbox,
    create_database,
    database_of,
    drop_database,
    drop_sandbox,
    flush_redis_db,
    new_suffix,
    open_sandbox,
    owner_of_note,
    process_owner,
    release_stale,
    with_database,
    with_redis_db,
)
from tests.fresh import child_env

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.single_node(reason="Redis logical databases (a cluster's sandbox is a namespace)"),
    # Killed runs' sandboxes and free databases: any other run's sandbox set-up would prune or claim them.
    pytest.mark.exclusive,
]

LEFT_KEY = "adp:camp:left-behind"
_KILLED_RUN = """
import asyncio, json, os, sys
from adplatform.config import load_config
from adplatform.sandbox import new_suffix, open_sandbox
made = asyncio.run(open_sandbox(load_config(), new_suffix("killed")))
print(json.dumps({"database": made.database, "redis_db": made.redis_db, "owner": made.owner}), flush=True)
os._exit(0)
"""


def _killed_run() -> dict[str, object]:
    """A sandbox whose process is gone: what a test session or bench killed mid-run leaves."""
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN], env=child_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    made: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return made


async def _databases(base: Config) -> dict[str, str | None]:
    admin = await asyncpg.connect(with_database(base.pg_dsn, "postgres"))
    try:
        rows = await admin.fetch(
            "SELECT datname, shobj_description(oid, 'pg_database') AS note FROM pg_database"
            " WHERE starts_with(datname, $1)",
            database_of(base.pg_dsn) + "_",
        )
    finally:
        await admin.close()
    return {r["datname"]: r["note"] for r in rows}


async def _claims(base: Config) -> dict[int, tuple[str | None, bool]]:
    """Each logical database (but 0): its claim's owner, and whether it holds the killed run's key."""
    found: dict[int, tuple[str | None, bool]] = {}
    for db in range(1, 16):
        client = aioredis.Redis.from_url(with_redis_db(base.redis_url, db), decode_responses=True)
        try:
            owner = await client.get(CLAIM_KEY)
            found[db] = (str(owner) if owner is not None else None, bool(await client.exists(LEFT_KEY)))
        finally:
            await client.aclose()
    return found


async def test_opening_a_sandbox_drops_what_a_killed_run_left_and_nothing_else(base_config: Config) -> None:
    killed = _killed_run()
    killed_db, killed_redis = str(killed["database"]), int(str(killed["redis_db"]))
    assert owner_of_note((await _databases(base_config))[killed_db]) == killed["owner"]
    assert (await _claims(base_config))[killed_redis] == (killed["owner"], False)
    # Its data: a campaign row and Redis keys, as a run leaves them.
    conn = await asyncpg.connect(with_database(base_config.pg_dsn, killed_db))
    await conn.execute("CREATE TABLE left_behind (x int)")
    await conn.close()
    client = aioredis.Redis.from_url(with_redis_db(base_config.redis_url, killed_redis))
    await client.set(LEFT_KEY, "1")
    await client.aclose()

    prefix = database_of(base_config.pg_dsn)
    # A second killed run, a connection still open to its database and one to its Redis database (an
    # orphaned child of that run).
    held = _killed_run()
    held_db, held_redis = str(held["database"]), int(str(held["redis_db"]))
    holder = await asyncpg.connect(with_database(base_config.pg_dsn, held_db))
    redis_holder = aioredis.Redis.from_url(with_redis_db(base_config.redis_url, held_redis))
    await redis_holder.ping()
    # A live run's (this process's), the demo's named one, one made before owners were noted, one a
    # user made by hand under the same prefix.
    live = await open_sandbox(base_config, new_suffix("live"))
    named = f"{prefix}_{new_suffix('named')}"
    await create_database(base_config.pg_dsn, named, owner=f"name:{named}")
    legacy = f"{prefix}_{new_suffix('legacy')}"
    await create_database(base_config.pg_dsn, legacy)
    users = f"{prefix}_{new_suffix('users')}"
    admin = await asyncpg.connect(with_database(base_config.pg_dsn, "postgres"))
    await admin.execute(f'CREATE DATABASE "{users}"')
    try:
        assert (await _databases(base_config))[legacy] == MARKER

        opened = await open_sandbox(base_config, new_suffix("next"))
        await close_sandbox(opened)

        left = await _databases(base_config)
        assert killed_db not in left
        assert {held_db, live.database, named, legacy, users} <= set(left)
        claims = await _claims(base_config)
        assert not any(has_key for _, has_key in claims.values())  # its Redis database was flushed
        assert killed["owner"] not in {owner for owner, _ in claims.values()}
        assert claims[live.redis_db][0] == live.owner
        assert claims[held_redis][0] == held["owner"]  # a client is still connected to it
    finally:
        await holder.close()
        await redis_holder.aclose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{users}"')
        await admin.close()
        for database in (named, legacy, held_db):
            await drop_database(base_config.pg_dsn, database)
        await close_sandbox(live)
    # With its connection closed, the second killed run's database goes at the next opening.
    again = await open_sandbox(base_config, new_suffix("again"))
    await close_sandbox(again)
    assert held_db not in await _databases(base_config)
    assert held["owner"] not in {owner for owner, _ in (await _claims(base_config)).values()}


@pytest.mark.parametrize(
    "text",
    ["plain", "it's", "a\\b", "'; DROP DATABASE x; --", "é ü 漢字", "back\\'slash", ""],
)
async def test_quote_literal_is_the_servers_own(base_config: Config, text: str) -> None:
    conn = await asyncpg.connect(base_config.pg_dsn)
    try:
        ours = quote_literal(text)
        assert ours == await conn.fetchval("SELECT quote_literal($1::text)", text)
        assert await conn.fetchval(f"SELECT {ours}") == text  # sql: constant identifiers
    finally:
        await conn.close()


def test_quote_literal_refuses_a_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        quote_literal("a\0b")


async def test_a_redis_database_a_client_is_connected_to_is_never_claimed(base_config: Config) -> None:
    """Someone's service on an empty logical database (no keys yet, so no sign of it but its connection)."""
    probe = await open_sandbox(base_config, new_suffix("probe"))
    first_free = probe.redis_db  # the database the next sandbox would claim
    await close_sandbox(probe)
    service = aioredis.Redis.from_url(with_redis_db(base_config.redis_url, first_free))
    await service.ping()
    try:
        made = await open_sandbox(base_config, new_suffix("beside"))
        await close_sandbox(made)
        assert made.redis_db != first_free
        assert await service.dbsize() == 0 and await service.get(CLAIM_KEY) is None
    finally:
        await service.aclose()


async def test_a_redis_user_refused_client_list_still_gets_a_sandbox_and_releases_nothing(
    base_config: Config,
) -> None:
    """Where an ACL refuses ``CLIENT LIST``, nobody's use of a database can be told: a sandbox is still
    claimed as before, and no stale claim is released (a killed run's database waits for its takeover)."""
    killed = _killed_run()
    admin = aioredis.Redis.from_url(base_config.redis_url)
    user = f"adp-test-{new_suffix('acl').replace('_', '-')}"
    await admin.acl_setuser(
        user, enabled=True, passwords=["+pw"], keys=["*"], channels=["*"], commands=["+@all", "-client"]
    )
    parts = base_config.redis_url.split("://", 1)
    limited = f"{parts[0]}://{user}:pw@{parts[1]}"
    try:
        assert await release_stale(limited) == []
        assert (await _claims(base_config))[int(str(killed["redis_db"]))][0] == killed["owner"]
        db = await claim_redis_db(limited, process_owner("acl"))
        assert (await _claims(base_config))[db][0] == process_owner("acl")
        assert await flush_redis_db(
            with_redis_db(base_config.redis_url, db), process_owner("acl"), keep_claim=False
        )
    finally:
        await admin.acl_deluser(user)
        await admin.aclose()
    await close_sandbox(await open_sandbox(base_config, new_suffix("after")))  # releases the killed run's
    assert killed["owner"] not in {owner for owner, _ in (await _claims(base_config)).values()}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The ``adplatform`` command in the session's environment (the session's sandbox is its default)."""
    return subprocess.run(
        [sys.executable, "-m", "adplatform.cli", *args],
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _listed(output: str) -> dict[str, list[str]]:
    """``sandbox list``'s rows by name: kind, state, connections, owner."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines()[1:]:
        kind, *rest = line.split()
        if kind == "database":
            rows[rest[0]] = [kind, *rest[1:]]
        else:  # "redis database 14 ..."
            rows[f"{rest[0]} {rest[1]}"] = [kind, *rest[2:]]
    return rows


async def test_the_sandbox_commands_list_prune_and_drop(base_config: Config) -> None:
    live = await open_sandbox(base_config, new_suffix("live"))
    legacy = f"{database_of(base_config.pg_dsn)}_{new_suffix('legacy')}"
    await create_database(base_config.pg_dsn, legacy)
    killed = _killed_run()  # last: opening a sandbox prunes what a killed run left
    killed_db, killed_redis = str(killed["database"]), f"database {killed['redis_db']}"
    try:
        listed = _cli("sandbox", "list")
        assert listed.returncode == 0, listed.stderr
        rows = _listed(listed.stdout)
        assert rows[killed_db] == ["database", "gone", "0", str(killed["owner"])]
        assert rows[killed_redis][:2] == ["redis", "gone"] and rows[killed_redis][3] == killed["owner"]
        assert rows[live.database][:2] == ["database", "running"] and rows[legacy][:2] == [
            "database",
            "unknown",
        ]

        pruned = _cli("sandbox", "prune")
        assert pruned.returncode == 0, pruned.stderr
        assert pruned.stdout.strip() == f"pruned: database {killed_db}, Redis {killed_redis}"
        rows = _listed(_cli("sandbox", "list").stdout)
        assert killed_db not in rows and killed_redis not in rows and live.database in rows
        assert _cli("sandbox", "prune").stdout.strip() == "nothing to prune"

        refused = _cli("sandbox", "drop", legacy)  # no --yes, no terminal
        assert refused.returncode == 2 and "without --yes" in refused.stderr, refused.stderr
        running = _cli("sandbox", "drop", live.database, "--yes")
        assert running.returncode == 2 and "still going" in running.stderr, running.stderr
        with pytest.raises(SandboxError, match="still going"):  # the library refuses it too
            await drop_sandbox(base_config, live.database)
        unknown = _cli("sandbox", "drop", "adplatform", "--yes")  # the configured kind of name: not a sandbox
        assert unknown.returncode == 1 and "no sandbox database 'adplatform'" in unknown.stderr, (
            unknown.stderr
        )
        assert legacy in await _databases(base_config) and live.database in await _databases(base_config)

        dropped = _cli("sandbox", "drop", legacy, "--yes")
        assert dropped.returncode == 0 and dropped.stdout.strip() == f"dropped {legacy}", dropped.stderr
        assert legacy not in await _databases(base_config)
    finally:
        await drop_database(base_config.pg_dsn, legacy)
        await close_sandbox(live)


async def test_dropping_a_gone_runs_sandbox_releases_its_redis_database_too(base_config: Config) -> None:
    """``drop`` of one whose run is gone, instead of waiting for the next prune: its Redis database too."""
    killed = _killed_run()
    dropped = _cli("sandbox", "drop", str(killed["database"]), "--yes")
    assert dropped.returncode == 0, dropped.stderr
    assert (
        dropped.stdout.strip()
        == f"dropped {killed['database']}, released Redis database {killed['redis_db']}"
    )
    assert (await _claims(base_config))[int(str(killed["redis_db"]))] == (None, False)
