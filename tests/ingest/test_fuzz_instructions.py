"""10,000 mutated campaign instructions through the real manager: it never stops, every rejected
message is in the DLQ with its reason, every valid one lands."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config
from adplatform.kafka import make_producer
from ingest.dlq import read_dlq
from ingest.generator import generate_campaigns
from ingest.instruction import COLUMNS, InstructionError, process_message
from ingest.manager import run_manager

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

COUNT = 10_000
WEIRD_VALUES: list[Any] = [
    None, 0, -1, 1.5, True, [], {}, "", " ", "NaN", "Infinity", "-0", "1e308", "0.0000001", "9" * 400,
    "\u0000", "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"), "😀" * 50, "x" * 5000,
    "{'start': '1', 'end': '2'", "{'start': 1, 'end': 2}", "[1, 2]",
    "{'start': '__import__(\"os\")', 'end': '1'}",
    "{'start': '2025-02-30', 'end': '2025-03-01'}", "{'start': '25:00:00', 'end': '1:00:00'}",
]  # fmt: skip


def mutate(rng: random.Random, row: dict[str, str], i: int) -> bytes:
    """One of many kinds of damage, or none (about a third of the messages stay valid)."""
    doc: dict[str, Any] = dict(row, campaign_id=f"fuzz-{i}")
    kind = rng.randrange(12)
    field = rng.choice(COLUMNS)
    if kind <= 3:
        pass  # valid
    elif kind == 4:
        doc.pop(field)
    elif kind == 5:
        doc[field] = rng.choice(WEIRD_VALUES)
    elif kind == 6:
        doc[rng.choice(["budget", "cpc", "cpa"])] = rng.choice(
            ["-5", "0", "abc", "1e999", "0.0000001", "1" * 30]
        )
    elif kind == 7:
        doc["action"] = rng.choice(["new campaign", "Delete Campaign", "", "New  Campaign"])
    elif kind == 8:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    elif kind == 9:
        raw = orjson.dumps(doc)
        cut = rng.randrange(1, len(raw))
        return raw[:cut]
    elif kind == 10:
        return orjson.dumps(rng.choice([[doc], "string", 42, None, {"nested": doc}]))
    else:
        return orjson.dumps(doc).replace(b'"', b"'", rng.randrange(1, 5))
    return orjson.dumps(doc)


async def test_fuzzed_instructions_never_stop_the_manager(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    rng = random.Random(20261130)
    base = generate_campaigns(50, 3, datetime.now(UTC))
    messages = [mutate(rng, base[i % len(base)], i) for i in range(COUNT)]
    expected_valid: set[str] = set()
    expected_rejected = 0
    for offset, raw in enumerate(messages):
        try:
            expected_valid.add(process_message(raw, version=offset + 1, now_s=0).campaign_id)
        except InstructionError:
            expected_rejected += 1
    assert 0 < expected_rejected < COUNT and len(expected_valid) > COUNT // 4

    producer = make_producer(topics, linger_ms=20)
    await producer.start()
    try:
        for i, raw in enumerate(messages):
            await producer.send(topics.topics.instructions, raw, key=f"k{i % 97}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    stats = await run_manager(topics, until_idle=True, idle_timeout_s=180)
    assert stats.messages == COUNT
    landed = {r["campaign_id"] for r in await pg.fetch("SELECT campaign_id FROM online_ads.ads")}
    assert landed == expected_valid
    dlq = await read_dlq(topics)
    assert len(dlq) == stats.rejected == expected_rejected
    assert all(entry.reason and entry.reason != "?" for entry in dlq)
    assert sum(stats.reasons.values()) == expected_rejected
