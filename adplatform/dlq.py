"""Reading the dead-letter queue of campaign instructions: every rejected message with its reason."""

from __future__ import annotations

from dataclasses import dataclass

from adplatform.config import Config
from adplatform.kafka import read_to_end


@dataclass(frozen=True)
class DlqEntry:
    """One rejected instruction: where it sits in the DLQ topic, the original message and the reason."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    reason: str
    source: str
    timestamp_ms: int


async def read_dlq(config: Config, *, limit: int | None = None) -> list[DlqEntry]:
    """Every DLQ entry from the beginning to the current end (bounded; no consumer group), oldest first."""
    entries: list[DlqEntry] = []
    for r in await read_to_end(config.kafka_bootstrap, config.topics.instructions_dlq):
        headers = {k: v.decode("utf-8", "replace") for k, v in r.headers}
        entries.append(
            DlqEntry(
                partition=r.partition,
                offset=r.offset,
                key=r.key,
                value=r.value or b"",
                reason=headers.get("reason", "?"),
                source=headers.get("source", "?"),
                timestamp_ms=r.timestamp,
            )
        )
    entries.sort(key=lambda e: e.timestamp_ms)
    return entries[:limit] if limit is not None else entries
