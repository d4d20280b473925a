"""The Redis side of a sandbox on Redis Cluster: a key namespace, since a cluster has only database 0.

A process started with ``ADP_REDIS_NAMESPACE=<ns>`` writes every platform key and channel under
``adp@<ns>:`` (``adplatform.names``); its hash tags are unchanged, so each key lives in the slot it would
have without the namespace. The namespace is claimed by an owner key inside it (as a logical database is on
one node), and emptying it deletes that prefix's keys, and only those, on every master, with SCAN and one
UNLINK per key (``adplatform.reset``'s way): never FLUSHALL, which would reach every other namespace and
the user's own keys. ``adplatform.sandbox`` decides who may claim, take over or empty; this module only
does it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from redis.asyncio.cluster import RedisCluster

from adplatform import names
from adplatform.reset import any_on_masters, delete_on_masters, keys_on_masters

#: The owner key of a claimed namespace (inside it, so emptying the namespace keeps it only on purpose).
CLAIM_SUFFIX: Final = "sandbox:owner"


def claim_key() -> str:
    return names.REDIS_PREFIX + CLAIM_SUFFIX


def _pattern() -> str:
    # The namespace is checked to hold no glob characters (``names.redis_prefix``).
    return names.REDIS_PREFIX + "*"


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


async def owner_of(client: RedisCluster) -> str | None:
    """Who holds this process's namespace (None: no one)."""
    return _text(await client.get(claim_key()))


async def delete_namespace(client: RedisCluster, *, keep_claim: bool) -> int:
    """Delete every key of this process's namespace on every master (the claim too unless
    ``keep_claim``); how many were deleted."""
    keep = {claim_key()} if keep_claim else set()
    return await delete_on_masters(client, (_pattern(),), keep=keep)


async def holds_keys(client: RedisCluster) -> bool:
    """Whether any key of the namespace exists on any master (its claim included)."""
    return await any_on_masters(client, _pattern())


async def claim(client: RedisCluster, owner: str, takeover: str) -> bool:
    """Claim the namespace for ``owner``: free (no owner, no keys), held by ``owner`` already, or held by
    ``takeover`` (a gone process's owner, or ``""``). A taken-over or re-opened namespace is emptied. Not
    atomic across masters as a logical database's claim is: one run per namespace is the caller's to
    ensure (a namespace is a random name per run)."""
    current = await owner_of(client)
    if current is None:
        if await holds_keys(client):
            return False  # data but no owner: someone else's, never touched
    elif current != owner and not (takeover and current == takeover):
        return False
    else:
        await delete_namespace(client, keep_claim=False)
    await client.set(claim_key(), owner)
    return True


async def flush(client: RedisCluster, owner: str, *, keep_claim: bool) -> bool:
    """Empty the namespace if ``owner`` holds it, keeping the claim or releasing it."""
    if await owner_of(client) != owner:
        return False
    await delete_namespace(client, keep_claim=keep_claim)
    return True


async def wipe(client: RedisCluster) -> bool:
    """Empty a claimed namespace but keep its claim (a fault run's "Redis lost its data")."""
    if await owner_of(client) is None:
        return False
    await delete_namespace(client, keep_claim=True)
    return True


async def claims(client: RedisCluster) -> dict[str, str]:
    """Every claimed namespace's prefix and owner."""
    found: dict[str, str] = {}
    for key in await keys_on_masters(client, "adp@*:" + CLAIM_SUFFIX):
        prefix = key.removesuffix(CLAIM_SUFFIX)
        try:  # a namespace's claim key only: the name as ``names.redis_prefix`` allows it
            if names.redis_prefix(prefix.removeprefix("adp@").removesuffix(":")) != prefix:
                continue
        except ValueError:
            continue
        owner = _text(await client.get(key))
        if owner is not None:
            found[prefix] = owner
    return found


async def release_stale(client: RedisCluster, stale: Callable[[str], bool]) -> list[str]:
    """Empty and release every namespace whose owner ``stale`` says is gone (a run killed before its
    tear-down); the prefixes released. Another namespace's keys and the user's are never touched; an owner
    that changed since it was read (a run taking it over) keeps its namespace. Unlike a logical database,
    a namespace's clients cannot be told from the others': an orphaned server of the killed run still
    writing there leaves keys without an owner, which no sandbox then claims."""
    released: list[str] = []
    for prefix, owner in sorted((await claims(client)).items()):
        if not stale(owner) or _text(await client.get(prefix + CLAIM_SUFFIX)) != owner:
            continue
        await delete_on_masters(client, (prefix + "*",))
        released.append(prefix)
    return released
