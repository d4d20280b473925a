"""Publishes a campaign-instruction CSV to ``campaign-instructions``: one JSON message per row, key = id.

Idempotent producer (acks=all, batched with linger). A malformed row is reported as ``FILE:LINE: reason``
and skipped; the rest goes on. Semantic checks (budgets, ranges, actions) are the Ad Manager's: a row that
fails them still goes out and lands in the DLQ with its reason, as any other producer's would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adplatform.config import Config
from adplatform.kafka import make_producer, start_or_close
from ingest.csvfile import RowError, read_campaign_csv, rebase_dates
from ingest.instruction import InstructionError, encode_instruction, instruction_from_row


@dataclass
class ProduceSummary:
    rows: int = 0
    published: int = 0
    skipped: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.published / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def produce_file(
    config: Config,
    path: Path,
    *,
    rate: float | None = None,
    rebase: bool = False,
    now: datetime | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_error: Callable[[str], None] | None = None,
) -> ProduceSummary:
    """Publish every well-formed row of ``path``; returns counts and the reported errors."""
    summary = ProduceSummary()
    moment = now or datetime.now(UTC)
    producer = make_producer(config, linger_ms=20, client_id="campaign-producer")
    await start_or_close(producer)
    started = time.monotonic()
    pending: list[Any] = []
    try:
        for item in read_campaign_csv(path):
            if isinstance(item, RowError):
                summary.skipped += 1
                summary.errors.append(str(item))
                if on_error:
                    on_error(str(item))
                continue
            line, row = item
            summary.rows += 1
            try:
                if rebase:
                    row = rebase_dates(row, moment)
                instr = instruction_from_row(row)
            except InstructionError as exc:
                message = f"{path}:{line}: {exc.reason}"
                summary.skipped += 1
                summary.errors.append(message)
                if on_error:
                    on_error(message)
                continue
            pending.append(
                await producer.send(
                    config.topics.instructions, encode_instruction(instr), key=instr.campaign_id.encode()
                )
            )
            summary.published += 1
            if on_progress and summary.published % 500 == 0:
                on_progress(summary.published)
            if rate:
                ahead_s = summary.published / rate - (time.monotonic() - started)
                if ahead_s > 0:
                    await asyncio.sleep(ahead_s)
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        if on_progress:
            on_progress(summary.published)
    finally:
        await producer.stop()
    summary.elapsed_s = time.monotonic() - started
    return summary
