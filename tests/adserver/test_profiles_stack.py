"""User profiles on the real PostgreSQL: a reload reads the table in chunks, is skipped while the table's
stamp is unchanged (any write, delete or truncate changes it), and shares repeated values."""

from __future__ import annotations

import asyncpg
import pytest

from adplatform.config import Config
from adplatform.profiles import SHARDS, Profile, ProfileTable, fetch_profiles
from adserver.sync.profiles import ProfileLoader
from ingest.generator import generate_users
from ingest.users_postgres import write_users


def profile_of(user: object) -> Profile:
    return Profile(*(getattr(user, f) for f in Profile.__struct_fields__))


@pytest.mark.postgres
async def test_a_reload_reads_every_user_in_chunks(base_config: Config, pg: asyncpg.Pool) -> None:
    users = generate_users(53, 11)
    await write_users(base_config.pg_dsn, users)
    snapshot = await fetch_profiles(base_config.pg_dsn, chunk_rows=7)
    assert snapshot.shards is not None and snapshot.version is not None
    table = ProfileTable()
    table.replace(snapshot.version, snapshot.shards)
    assert len(table) == 53 and table.reloads == 1
    for user in users:
        assert table.get(user.user_id) == profile_of(user)
    assert table.get("nobody") is None
    # Equal values are one object across profiles (a third of the memory at a million users).
    by_city: dict[str, str] = {}
    for user in users:
        city = table.get(user.user_id).city  # type: ignore[union-attr]
        assert city is not None
        assert by_city.setdefault(city, city) is city


@pytest.mark.postgres
async def test_the_stamp_changes_with_every_kind_of_write(base_config: Config, pg: asyncpg.Pool) -> None:
    dsn = base_config.pg_dsn
    await write_users(dsn, generate_users(5, 1))
    first = await fetch_profiles(dsn)
    assert first.shards is not None and sum(map(len, first.shards)) == 5
    unchanged = await fetch_profiles(dsn, unless_version=first.version)
    assert unchanged.shards is None and unchanged.version == first.version

    stamps = [first.version]
    await write_users(dsn, generate_users(5, 1))  # the same rows upserted again still counts as a write
    stamps.append((await fetch_profiles(dsn)).version)
    first_id = 'user_id = (SELECT min(user_id) FROM online_ads."user")'
    await pg.execute(f'UPDATE online_ads."user" SET age = age + 1 WHERE {first_id}')  # noqa: S608
    stamps.append((await fetch_profiles(dsn)).version)
    await pg.execute(f'DELETE FROM online_ads."user" WHERE {first_id}')  # noqa: S608
    after_delete = await fetch_profiles(dsn, unless_version=stamps[-1])
    assert after_delete.shards is not None and sum(map(len, after_delete.shards)) == 4
    stamps.append(after_delete.version)
    # A reset's TRUNCATE of every table, the stamps' own included, still leaves a new stamp.
    await pg.execute('TRUNCATE online_ads."user", online_ads.table_versions')
    after_truncate = await fetch_profiles(dsn, unless_version=stamps[-1])
    assert after_truncate.shards is not None and sum(map(len, after_truncate.shards)) == 0
    stamps.append(after_truncate.version)
    assert None not in stamps and len(set(stamps)) == len(stamps)


@pytest.mark.postgres
async def test_the_loader_reloads_only_when_the_table_changed(base_config: Config, pg: asyncpg.Pool) -> None:
    dsn = base_config.pg_dsn
    await write_users(dsn, generate_users(8, 2))
    table = ProfileTable()
    loader = ProfileLoader(dsn, table)
    assert await loader.load_once() and (table.loads, table.reloads, len(table)) == (1, 1, 8)
    assert await loader.load_once() and (table.loads, table.reloads) == (2, 1)
    extra = generate_users(3, 9)
    await write_users(dsn, extra)
    assert await loader.load_once() and (table.loads, table.reloads, len(table)) == (3, 2, 11)
    assert table.get(extra[0].user_id) == profile_of(extra[0])

    always = ProfileTable()
    full = ProfileLoader(dsn, always, full_reload_s=0.0)  # the periodic full reload, due at every check
    assert await full.load_once() and await full.load_once()
    assert (always.loads, always.reloads, len(always)) == (2, 2, 11)


def test_a_table_built_from_a_mapping_finds_every_user() -> None:
    profile = Profile(30, "F", "medium", "mobile", "Austin", "TX", "US")
    users = {f"user-{i}": profile for i in range(SHARDS * 5)}
    table = ProfileTable(users)
    assert len(table) == len(users) and table.version is None
    assert all(table.get(uid) is profile for uid in users)
    assert table.get("user-x") is None and len(ProfileTable()) == 0
