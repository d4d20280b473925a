"""Which pacing mode the Ad Manager gives a campaign: a New instruction without ``pacing_mode`` is even; an
Update or Stop without it keeps the mode of the campaign's earlier instruction in the batch, else it is
marked for the stored mode (``Folded.inherits_pacing``), so a file from before pacing modes never turns an
asap campaign even."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from ingest.instruction import NEW, STOP, UPDATE, encode_instruction, instruction_from_row
from ingest.manager import fold


def _record(offset: int, row: dict[str, str]) -> ConsumerRecord[bytes, bytes]:
    value = encode_instruction(instruction_from_row(row))
    return ConsumerRecord(
        topic="t", partition=0, offset=offset, timestamp=1_700_000_000_000, timestamp_type=0,
        key=row["campaign_id"].encode(), value=value, checksum=None, serialized_key_size=0,
        serialized_value_size=len(value), headers=[],
    )  # fmt: skip


def _row(good_row: dict[str, str], cid: str, action: str, mode: str | None = None) -> dict[str, str]:
    row = {**good_row, "campaign_id": cid, "action": action}
    if mode is not None:
        row["pacing_mode"] = mode
    return row


def test_modes_of_a_batch(good_row: dict[str, str]) -> None:
    rows = [
        _row(good_row, "new-default", NEW),
        _row(good_row, "new-asap", NEW, "asap"),
        _row(good_row, "new-asap", UPDATE),  # keeps asap from the New before it
        _row(good_row, "stored", UPDATE),  # only PostgreSQL knows its mode
        _row(good_row, "stored-stop", STOP, ""),
        _row(good_row, "made-even", UPDATE, "even"),
        _row(good_row, "chain", UPDATE),
        _row(good_row, "chain", STOP),  # still the stored mode: nothing in the batch said one
    ]
    folded = fold([_record(i, row) for i, row in enumerate(rows)], slot_s=600)
    assert not folded.rejected
    modes = {c.campaign_id: c.pacing_mode for c in folded.campaigns}
    assert modes == {
        "new-default": "even", "new-asap": "asap", "stored": "even", "stored-stop": "even",
        "made-even": "even", "chain": "even",
    }  # fmt: skip
    assert folded.inherits_pacing == {"stored", "stored-stop", "chain"}
