"""Campaign instructions, as the Ad Manager reads them: the code lives in ``adplatform.instruction``, which
the admin API validates with too (the two services may not import each other); this module keeps the
names ingest and its callers have always imported."""

from __future__ import annotations

from adplatform.instruction import (
    ACTIONS,
    COLUMNS,
    DEVICE_VALUES,
    GENDER_VALUES,
    INCOME_VALUES,
    MAX_AGE,
    MAX_FIELD_CHARS,
    MAX_MESSAGE_BYTES,
    MAX_RANGE_CHARS,
    NEW,
    STOP,
    UPDATE,
    CampaignInstruction,
    InstructionError,
    decode_instruction,
    encode_instruction,
    enrich,
    field_errors,
    instruction_from_row,
    parse_age_range,
    parse_flight,
    parse_range,
    process_message,
)

__all__ = [
    "ACTIONS",
    "COLUMNS",
    "DEVICE_VALUES",
    "GENDER_VALUES",
    "INCOME_VALUES",
    "MAX_AGE",
    "MAX_FIELD_CHARS",
    "MAX_MESSAGE_BYTES",
    "MAX_RANGE_CHARS",
    "NEW",
    "STOP",
    "UPDATE",
    "CampaignInstruction",
    "InstructionError",
    "decode_instruction",
    "encode_instruction",
    "enrich",
    "field_errors",
    "instruction_from_row",
    "parse_age_range",
    "parse_flight",
    "parse_range",
    "process_message",
]
