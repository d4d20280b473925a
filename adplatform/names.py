"""Consumer-group names and Redis key layout: the one place they are spelled.

Topic names live on ``adplatform.config.TopicConfig`` (they take the configured prefix). Redis keys of one
campaign share the hash tag ``{campaign_id}`` so that, on Redis Cluster, a campaign's budget, spend and
de-duplication keys live on one shard and one Lua script can touch them atomically.
"""

from __future__ import annotations

import binascii
import functools
import os
import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import redis.asyncio as aioredis

GROUP_AD_MANAGER: Final = "ad-manager"
GROUP_SERVED_WRITER: Final = "served-writer"
GROUP_LEDGER: Final = "spend-ledger"

#: ``ADP_REDIS_NAMESPACE``: a run of its own on a shared Redis Cluster (a test session), which has only
#: database 0 and so cannot be given a logical database of its own. Read here, from the environment, and
#: not by ``load_config``: every key name below is a module constant, fixed when this module is imported,
#: so the namespace must be set before the process starts (a child process inherits it).
NAMESPACE_ENV: Final = "ADP_REDIS_NAMESPACE"
_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def redis_prefix(namespace: str) -> str:
    """The prefix of every platform key and channel: ``adp:`` without a namespace, else ``adp@<ns>:`` (no
    ``adp:*`` pattern matches it, so a reset of the platform's keys never reaches a namespace's, and it has
    no braces, so the keys' hash tags, and hence their slots, are the same as without it)."""
    if not namespace:
        return "adp:"
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"{NAMESPACE_ENV} must be 1-32 of [a-z0-9_-], starting with a letter or digit")
    return f"adp@{namespace}:"


NAMESPACE: Final = os.environ.get(NAMESPACE_ENV, "")
REDIS_PREFIX: Final = redis_prefix(NAMESPACE)
#: Pub/sub channel on which budget exhaustion (and replenishment) is announced to every ad-server worker.
CHANNEL_BUDGET: Final = REDIS_PREFIX + "budget-events"


def budget_channel(redis_db: int) -> str:
    """``CHANNEL_BUDGET`` of one logical database. Redis pub/sub is server-wide, not per database: a test
    or demo on its own database that published on the same name would block campaigns in the ad servers of
    database 0. Database 0 keeps the plain name, so services of an earlier version still hear it."""
    return CHANNEL_BUDGET if redis_db == 0 else f"{CHANNEL_BUDGET}:db{redis_db}"


def budget_channel_of(client: aioredis.Redis) -> str:
    """The budget channel of the logical database ``client`` is connected to."""
    return budget_channel(int(client.connection_pool.connection_kwargs.get("db") or 0))


#: Pacer lease: one pacer acts per slot.
PACER_LEASE: Final = REDIS_PREFIX + "pacer:lease"
#: Set of campaign ids whose budget (total or slot) is spent; workers load it at start.
BLOCKED_SET: Final = REDIS_PREFIX + "blocked"


#: Redis Cluster's hash slots: a key's slot is CRC16 of its hash tag modulo this.
HASH_SLOTS: Final = 16384


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    """For each hash slot, a short hash tag (hex digits) that maps to it: the first hex number to reach the
    slot, so every process computes the same table (about 0.1 s, once)."""
    tags: list[str | None] = [None] * HASH_SLOTS
    left, i = HASH_SLOTS, 0
    while left:
        tag = format(i, "x")
        slot = binascii.crc_hqx(tag.encode(), 0) % HASH_SLOTS
        if tags[slot] is None:
            tags[slot] = tag
            left -= 1
        i += 1
    return tuple(t for t in tags if t is not None)


def slot_tag(slot: int) -> str:
    """A hash tag whose keys live in ``slot``."""
    return _slot_tags()[slot]


def blocked_key_of_slot(slot: int) -> str:
    """On Redis Cluster: the blocked set of the campaigns of one hash slot (``BLOCKED_SET``'s shard)."""
    return f"{BLOCKED_SET}:{{{slot_tag(slot)}}}"


def budget_channel_of_slot(slot: int) -> str:
    """On Redis Cluster: the shard channel (``SPUBLISH``) of one hash slot's budget notices."""
    return f"{CHANNEL_BUDGET}:{{{slot_tag(slot)}}}"


def budget_key(campaign_id: str) -> str:
    """Hash of one campaign's money: budget, spent, version, slot id, slot budget, slot spent (micros)."""
    return f"{REDIS_PREFIX}camp:{{{campaign_id}}}"


def dedup_key(campaign_id: str, event_id: str) -> str:
    """Marks one (request, action) as charged (``event_id``); same hash slot as the campaign's budget."""
    return f"{REDIS_PREFIX}dedup:{{{campaign_id}}}:{event_id}"


def fcap_key(user_id: str, campaign_id: str) -> str:
    """One user's recent ads of one capped campaign (a sorted set of serve times). Hash-tagged by user, so
    all of a request's cap keys share a slot and one script checks them atomically. User ids never contain
    braces (``adplatform.params.check_user_id``)."""
    return f"{REDIS_PREFIX}fcap:{{{user_id}}}:{campaign_id}"


#: Every key the platform writes, as SCAN patterns (the blocked patterns cover ``BLOCKED_SET`` and its
#: per-slot shards): what a reset on Redis Cluster deletes, where it cannot FLUSHDB a database of its own.
PLATFORM_KEY_PATTERNS: Final = (
    REDIS_PREFIX + "camp:*",
    REDIS_PREFIX + "dedup:*",
    REDIS_PREFIX + "fcap:*",
    BLOCKED_SET,
    BLOCKED_SET + ":*",
    PACER_LEASE,
)


def campaign_id_of(key: str) -> str:
    """The campaign of a key built by ``budget_key`` or ``dedup_key``: its hash tag.

    Redis Cluster's hash tag is the text between the first ``{`` and the next ``}``; campaign ids never
    contain braces (the Ad Manager accepts ``[A-Za-z0-9_-]``). Raises ``ValueError`` for any other key.
    """
    open_at = key.find("{") if key.startswith(REDIS_PREFIX) else -1
    close_at = key.find("}", open_at + 1) if open_at >= 0 else -1
    if close_at <= open_at + 1:
        raise ValueError(f"not a campaign key: {key!r}")
    return key[open_at + 1 : close_at]
