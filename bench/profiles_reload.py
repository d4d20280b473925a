"""User profiles' reload: how long it holds a worker's event loop, its CPU and the table's memory, by the
number of users, beside the load written the plain way.

    python -m bench.profiles_reload [--users 100000,1000000] [--repeats 3]

Every ad-server worker keeps every user's profile in memory and checks ``online_ads."user"`` every minute
(``adserver.sync.profiles``). Here, in a database of the bench's own (dropped afterwards) holding
``--users`` generated users, three arms alternate, each ``--repeats`` times:
- ``plain``, the reference: the load as it was written first, one ``fetch`` of the whole table then one dict
  of every user built in one go;
- ``reload``: ``adplatform.profiles.fetch_profiles`` reading the whole table (a cursor, ``CHUNK_ROWS`` rows
  per fetch, ``SHARDS`` dicts, repeated values shared);
- ``check``: the same call with the table's stamp unchanged (the minute's usual case: nothing read).
Each arm's CPU is its best run (``time.process_time``, this process only); its hold on the loop, the median
over its runs of the longest a 0.5 ms sampler task waited past its time: what a request arriving then would
wait. The table's memory is counted once per arm with ``sys.getsizeof`` over every distinct object it holds
(dicts, ids, profiles, values). Saves JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import sys
from collections.abc import Awaitable, Callable
from typing import cast

import asyncpg

from adplatform.cli.common import script_main
from adplatform.config import load_config
from adplatform.profiles import Profile, fetch_profiles
from adplatform.sandbox import sandbox_environment
from bench.http_stack import save_results
from bench.loop_hold import held

_QUERY = (
    'SELECT user_id, age, gender, income_bucket, device_type, city, state, country FROM online_ads."user"'
)
# The generator's spread of values: 60 ages, 2 genders, 3 incomes and devices, 200 cities in 50 states.
_FILL = """
INSERT INTO online_ads."user" (user_id, name, age, gender, income_bucket, device_type, city, state, country,
                               email)
SELECT md5(g::text)::uuid::text, 'bench user', 18 + g % 60, (ARRAY['M', 'F'])[1 + g % 2],
       (ARRAY['low', 'medium', 'high'])[1 + g % 3], (ARRAY['mobile', 'desktop', 'tablet'])[1 + (g / 3) % 3],
       'City ' || (g % 200), 'State ' || (g % 50), 'USA', 'bench@example.invalid'
FROM generate_series($1::int, $2::int) AS g
"""

Load = Callable[[str], Awaitable[object]]


async def plain_load(dsn: str) -> object:
    """The reference: every row in one fetch, then one dict of every user in one go."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(_QUERY)
    finally:
        await conn.close()
    return {
        r["user_id"]: Profile(
            r["age"], r["gender"], r["income_bucket"], r["device_type"], r["city"], r["state"], r["country"]
        )
        for r in rows
    }


async def reload(dsn: str) -> object:
    return (await fetch_profiles(dsn)).shards


def _check(version: int | None) -> Load:
    async def check(dsn: str) -> object:
        snapshot = await fetch_profiles(dsn, unless_version=version)
        assert snapshot.shards is None, "the stamp moved during the bench"
        return None

    return check


def table_bytes(table: object) -> int:
    """Bytes of every distinct object a loaded table holds (its dicts, ids, profiles and their values)."""
    dicts = cast("list[dict[str, Profile]]", table if isinstance(table, list) else [table])
    seen: set[int] = set()
    total = sys.getsizeof(table) if isinstance(table, list) else 0

    def count(obj: object) -> None:
        nonlocal total
        if id(obj) not in seen:
            seen.add(id(obj))
            total += sys.getsizeof(obj)

    for d in dicts:
        total += sys.getsizeof(d)
        for user_id, profile in d.items():
            count(user_id)
            count(profile)
            for value in (profile.gender, profile.income_bucket, profile.device_type, profile.city,
                          profile.state, profile.country, profile.age):  # fmt: skip
                count(value)
    return total


async def run(sizes: list[int], repeats: int) -> list[dict[str, object]]:
    dsn = load_config().pg_dsn  # the sandbox's database
    rows: list[dict[str, object]] = []
    filled = 0
    for n in sizes:
        conn = await asyncpg.connect(dsn)
        try:
            if n > filled:
                await conn.execute(_FILL, filled + 1, n)
                filled = n
            await conn.execute('ANALYZE online_ads."user"')
            version = await conn.fetchval("SELECT version FROM online_ads.table_versions WHERE name = 'user'")
        finally:
            await conn.close()
        arms: dict[str, Load] = {"plain": plain_load, "reload": reload, "check": _check(version)}
        measured: dict[str, list[tuple[float, float, float]]] = {arm: [] for arm in arms}
        memory: dict[str, int] = {}
        for _ in range(repeats):
            for arm, load in arms.items():
                run_ = await held(functools.partial(load, dsn))
                measured[arm].append((run_.cpu_s, run_.wall_s, run_.held_s))
                if arm not in memory and run_.result is not None:
                    memory[arm] = table_bytes(run_.result)
                del run_
        row: dict[str, object] = {"users": n}
        for arm, m in measured.items():
            row[f"{arm}_cpu_ms"] = round(min(c for c, _, _ in m) * 1000, 1)
            row[f"{arm}_wall_ms"] = round(min(w for _, w, _ in m) * 1000, 1)
            row[f"{arm}_held_ms"] = round(statistics.median(h for _, _, h in m) * 1000, 2)
        for arm, size in memory.items():
            row[f"{arm}_bytes"] = size
        rows.append(row)
    return rows


def _mb(size: object) -> str:
    return f"{int(str(size)) / 1e6:.1f}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profiles_reload", description=__doc__)
    parser.add_argument("--users", default="100000,1000000", help="comma list of table sizes, ascending")
    parser.add_argument("--repeats", type=int, default=3, help="runs per arm and size (alternating)")
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    sizes = sorted(int(n) for n in args.users.split(",") if n)
    with sandbox_environment("bench"):  # its own database, never the user's
        rows = asyncio.run(run(sizes, args.repeats))
    for r in rows:
        held = f"loop held {r['reload_held_ms']:>6.1f} ms (plain {r['plain_held_ms']:>7.1f}"
        cpu = f"CPU {r['reload_cpu_ms']:>7.1f} ms (plain {r['plain_cpu_ms']:>7.1f}"
        print(
            f"users {r['users']:>9,}: {held}, unchanged check {r['check_held_ms']:.1f}); "
            f"{cpu}, check {r['check_cpu_ms']:.1f}); "
            f"table {_mb(r['reload_bytes'])} MB (plain {_mb(r['plain_bytes'])})"
        )
    save_results("profiles-reload", vars(args), rows, label=args.label)
    return 0


if __name__ == "__main__":
    sys.exit(script_main(lambda: main(sys.argv[1:])))
