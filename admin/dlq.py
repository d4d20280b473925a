"""``GET /v1/dlq`` and ``POST /v1/dlq/{partition}/{offset}/replay``: rejected instructions with their
reasons, and a replay that re-publishes the original message (same key and value) to
``campaign-instructions`` once. The replay is recorded in PostgreSQL in the transaction that published it,
under an advisory lock on the DLQ record, so a second replay answers the first one's offset."""

from __future__ import annotations

import msgspec

from admin import schema, store
from admin.error import AdminError
from admin.keys import Principal
from admin.state import AdminState
from adplatform.dlq import read_dlq, read_entry


async def list_dlq(state: AdminState, limit: int) -> schema.DlqPage:
    entries = await read_dlq(state.config)
    async with state.pool.acquire() as conn:
        replays = await store.replays(conn)
    items = [
        schema.DlqItem(
            partition=e.partition,
            offset=e.offset,
            key=None if e.key is None else e.key.decode("utf-8", "replace"),
            value=e.value.decode("utf-8", "replace"),
            reason=e.reason,
            source=e.source,
            timestamp_ms=e.timestamp_ms,
            replay=replays.get((e.partition, e.offset)),
        )
        for e in entries[-limit:]
    ]
    return schema.DlqPage(items=items)


async def replay(state: AdminState, partition: int, offset: int, author: Principal) -> schema.ReplayResult:
    async with state.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('adp-dlq'), hashtext($1))", f"{partition}/{offset}"
        )
        done = await conn.fetchrow(
            'SELECT partition, "offset", author FROM online_ads.dlq_replays'
            " WHERE dlq_partition = $1 AND dlq_offset = $2",
            partition, offset,
        )  # fmt: skip
        if done is not None:
            return schema.ReplayResult(
                dlq_partition=partition, dlq_offset=offset, partition=done["partition"],
                offset=done["offset"], author=done["author"], replayed_before=True,
            )  # fmt: skip
        entry = await read_entry(state.config, partition, offset)
        if entry is None:
            raise AdminError(404, f"No DLQ record at partition {partition}, offset {offset}.")
        new_partition, new_offset = await state.publisher.publish(
            state.config.topics.instructions, entry.value, key=entry.key,
            headers=[("author", author.name.encode()), ("replay-of", f"{partition}/{offset}".encode())],
        )  # fmt: skip
        await conn.execute(
            'INSERT INTO online_ads.dlq_replays (dlq_partition, dlq_offset, partition, "offset", author)'
            " VALUES ($1, $2, $3, $4, $5)",
            partition, offset, new_partition, new_offset, author.name,
        )  # fmt: skip
        campaign_id = entry.key.decode("utf-8", "replace") if entry.key else ""
        await store.insert_audit(
            conn, author=author.name, action="replay", campaign_id=campaign_id, partition=new_partition,
            offset=new_offset, instruction=_as_json(entry.value),
        )  # fmt: skip
    return schema.ReplayResult(
        dlq_partition=partition, dlq_offset=offset, partition=new_partition, offset=new_offset,
        author=author.name, replayed_before=False,
    )  # fmt: skip


def _as_json(value: bytes) -> bytes:
    """The replayed message for the audit's jsonb column, as a JSON string (it may not even be JSON, and
    jsonb refuses NUL characters, which are replaced)."""
    return msgspec.json.encode(value.decode("utf-8", "replace").replace("\x00", "\ufffd"))
