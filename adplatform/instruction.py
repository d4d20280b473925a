"""Campaign instructions: the ``campaign-instructions`` wire format and its enrichment into a ``Campaign``.

An instruction is one row of the seed CSV as a JSON object of 17 strings, plus optional ones
(``OPTIONAL_COLUMNS``: ``frequency_cap``, ``pacing_mode``). ``process_message`` is the Ad
Manager's pure message processor (snuba style): bytes in, a normalized ``Campaign`` out, or an
``InstructionError`` whose ``reason`` is short and machine-friendly (it goes to the DLQ with the message).

It lives in ``adplatform`` (the wire schemas) because two services validate with it: the Ad Manager
(``ingest``) and the admin API (``admin``), which may not import each other. ``field_errors`` runs the very
checks ``enrich`` runs and reports one reason per field; ``enrich`` raises the first of them, so the manager's
DLQ reason is the first reason the API would give.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time
from typing import Final, NamedTuple, TypeVar

import msgspec

from index.campaign import (
    ACTIVE,
    ALL,
    DEVICE_TYPES,
    EVEN,
    GENDERS,
    INACTIVE,
    INCOME_BUCKETS,
    PACING_MODES,
    SLOT_S,
    Campaign,
    PacingMode,
)
from index.fcap import FrequencyCap, FrequencyCapError, parse_cap
from index.money import MoneyError, cpm_units, parse_micros
from index.pacing import planned_slot_budget

NEW: Final = "New Campaign"
UPDATE: Final = "Update Campaign"
STOP: Final = "Stop Campaign"
ACTIONS: Final = (NEW, UPDATE, STOP)

GENDER_VALUES: Final = frozenset((ALL, *GENDERS))
DEVICE_VALUES: Final = frozenset((ALL, *DEVICE_TYPES))
INCOME_VALUES: Final = frozenset((ALL, *INCOME_BUCKETS))

#: Longest accepted value of any field; the longest text in the seed is ~300 chars.
MAX_FIELD_CHARS: Final = 1_000
#: Longest accepted range literal: ``ast.literal_eval`` on a bounded input cannot exhaust memory or stack.
MAX_RANGE_CHARS: Final = 200
#: 19 fields of 1,000 chars, each char at most a 6-byte JSON escape, plus slack.
MAX_MESSAGE_BYTES: Final = 128 * 1024
MAX_AGE: Final = 150

_CAMPAIGN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Hours are not zero-padded in the seed ("5:00:00"); seconds are optional for leniency.
_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_AGE = re.compile(r"\d{1,3}")
# The canonical spelling of a range, as the seed and our generator write it. Matching it first skips
# ``ast.literal_eval``, which is most of the cost of enriching an instruction.
_CANONICAL_RANGE = re.compile(r"\{'start': '([^'\\]*)', 'end': '([^'\\]*)'\}")


T = TypeVar("T")


class InstructionError(ValueError):
    """An instruction that cannot become a campaign; ``reason`` is short and machine-friendly."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CampaignInstruction(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One campaign instruction as sent on ``campaign-instructions``: the seed CSV's columns, all strings,
    then the optional columns (a file or message without them means their empty default; an instruction
    at its defaults encodes exactly as before they existed)."""

    text: str
    category: str
    keywords: str
    campaign_id: str
    action: str
    target_gender: str
    target_age_range: str
    target_city: str
    target_state: str
    target_country: str
    target_income_bucket: str
    target_device: str
    cpc: str
    cpa: str
    budget: str
    date_range: str
    time_range: str
    #: ``N/window`` (``3/1h``, ``10/1d``, ``5/flight``; ``index.fcap``); empty: uncapped.
    frequency_cap: str = ""
    #: ``asap`` or ``even``; empty: ``even`` in a New instruction, the campaign's current mode in an Update
    #: or Stop (the Ad Manager looks it up: ``ingest.manager.fold``).
    pacing_mode: str = ""


#: Optional columns: a CSV file, message or API body may omit them (empty: their default meaning).
OPTIONAL_COLUMNS: Final[tuple[str, ...]] = ("frequency_cap", "pacing_mode")
#: Every field of an instruction, in file order (the struct declares them in that order).
FIELDS: Final[tuple[str, ...]] = CampaignInstruction.__struct_fields__
#: The seed CSV's columns, in file order: every file and message has them.
COLUMNS: Final[tuple[str, ...]] = tuple(f for f in FIELDS if f not in OPTIONAL_COLUMNS)

# Built once: msgspec decoders and encoders are reusable and thread-safe.
_decoder: Final = msgspec.json.Decoder(CampaignInstruction)
_encoder: Final = msgspec.json.Encoder()


def _show(value: object, limit: int = 60) -> str:
    """A bounded repr of user input for error reasons (they travel in DLQ headers and logs)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_instruction(raw: bytes) -> CampaignInstruction:
    """Decode one message; unknown extra fields are ignored, every known field must be a string."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InstructionError(f"message too large: {len(raw)} bytes")
    try:
        return _decoder.decode(raw)
    # msgspec raises UnicodeDecodeError for invalid UTF-8 inside strings, DecodeError otherwise.
    except (msgspec.DecodeError, UnicodeDecodeError):
        pass
    # Slow path, only for bad messages: find out what exactly is wrong.
    raise InstructionError(_diagnose(raw)) from None


def _diagnose(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return "not JSON"
    if not isinstance(obj, dict):
        return "not a JSON object"
    for name in FIELDS:
        if name not in obj:
            if name in OPTIONAL_COLUMNS:
                continue
            return f"missing field: {name}"
        if not isinstance(obj[name], str):
            return f"field {name}: expected a string"
    return "invalid instruction"


def encode_instruction(instr: CampaignInstruction) -> bytes:
    """The JSON message for ``campaign-instructions``."""
    return _encoder.encode(instr)


def instruction_from_row(row: Mapping[str, str]) -> CampaignInstruction:
    """Build an instruction from a CSV row dict; extra keys are ignored, optional ones may be missing."""
    values: dict[str, str] = {}
    for name in FIELDS:
        value = row.get(name)
        if value is None:
            if name in OPTIONAL_COLUMNS:
                continue
            raise InstructionError(f"missing field: {name}")
        if not isinstance(value, str):
            raise InstructionError(f"field {name}: expected a string")
        values[name] = value
    return CampaignInstruction(**values)


def parse_range(text: str, field: str) -> tuple[str, str]:
    """Parse a range literal ``{'start': 'a', 'end': 'b'}`` safely into ``(start, end)``."""
    if len(text) > MAX_RANGE_CHARS:
        raise InstructionError(f"unparsable {field}: longer than {MAX_RANGE_CHARS} chars")
    canonical = _CANONICAL_RANGE.fullmatch(text)
    if canonical:
        return canonical[1], canonical[2]
    try:
        value = ast.literal_eval(text)
    # literal_eval reports bad input through several exception types; all mean "not a literal".
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise InstructionError(f"unparsable {field}: {_show(text)}") from None
    if not isinstance(value, dict) or set(value) != {"start", "end"}:
        raise InstructionError(f"unparsable {field}: expected a dict with 'start' and 'end'")
    start, end = value["start"], value["end"]
    if not isinstance(start, str) or not isinstance(end, str):
        raise InstructionError(f"unparsable {field}: 'start' and 'end' must be strings")
    return start, end


def _parse_date(text: str, field: str) -> date:
    if _DATE.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise InstructionError(f"unparsable {field}: bad date {_show(text)}")


def _parse_time(text: str, field: str) -> time:
    match = _TIME.fullmatch(text)
    if match:
        hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
        if hour < 24 and minute < 60 and second < 60:
            return time(hour, minute, second)
    raise InstructionError(f"unparsable {field}: bad time {_show(text)}")


# Files repeat the same flights, age ranges and prices across thousands of rows: cache the parsed
# values (immutable; a failing parse raises and is not cached).
@functools.lru_cache(maxsize=8192)
def parse_flight(date_range: str, time_range: str) -> tuple[int, int]:
    """Flight as UTC epoch seconds: ``date.start + time.start`` → ``date.end + time.end``, literally."""
    d0, d1 = parse_range(date_range, "date_range")
    t0, t1 = parse_range(time_range, "time_range")
    start = datetime.combine(_parse_date(d0, "date_range"), _parse_time(t0, "time_range"), tzinfo=UTC)
    end = datetime.combine(_parse_date(d1, "date_range"), _parse_time(t1, "time_range"), tzinfo=UTC)
    return int(start.timestamp()), int(end.timestamp())


@functools.lru_cache(maxsize=1024)
def parse_age_range(text: str) -> tuple[int, int]:
    """Inclusive age bounds; ``(0, 0)`` means any age."""
    start, end = parse_range(text, "target_age_range")
    if not (_AGE.fullmatch(start) and _AGE.fullmatch(end)):
        raise InstructionError(f"invalid target_age_range: {_show(text)}")
    lo, hi = int(start), int(end)
    if hi > MAX_AGE or lo > hi:
        raise InstructionError(f"invalid target_age_range: {_show(text)}")
    return lo, hi


@functools.lru_cache(maxsize=256)
def parse_frequency_cap(text: str) -> FrequencyCap | None:
    """The ``frequency_cap`` field: ``None`` when empty (uncapped); ``InstructionError`` with the reason."""
    try:
        return parse_cap(text)
    except FrequencyCapError as exc:
        raise InstructionError(f"invalid frequency_cap {_show(text)}: {exc}") from None


def parse_pacing_mode(text: str) -> PacingMode:
    """The ``pacing_mode`` field: ``asap`` or ``even``; empty means ``even`` (the default of a New; the
    Ad Manager gives an Update or Stop without it the campaign's current mode instead)."""
    if text == "" or text == EVEN:
        return "even"
    if text == "asap":
        return "asap"
    raise InstructionError(f"invalid pacing_mode {_show(text)}: expected one of {', '.join(PACING_MODES)}")


@functools.lru_cache(maxsize=8192)
def _money(text: str, field: str) -> int:
    try:
        return parse_micros(text, field=f"field {field}")
    except MoneyError as exc:
        raise InstructionError(str(exc)) from None


class _Checked(NamedTuple):
    """The parsed values of a valid instruction (``enrich`` builds the campaign from them)."""

    age: tuple[int, int]
    cpc: int
    cpa: int
    budget: int
    flight: tuple[int, int]
    cap: FrequencyCap | None
    pacing: PacingMode


def _attempt(errors: list[tuple[str, str]], field: str, parse: Callable[[], T]) -> T | None:
    try:
        return parse()
    except InstructionError as exc:
        errors.append((field, exc.reason))
        return None


def _flight_field(reason: str) -> str:
    return "time_range" if reason.startswith("unparsable time_range") else "date_range"


def _check(instr: CampaignInstruction) -> tuple[list[tuple[str, str]], _Checked | None]:
    """Every check of the Ad Manager, in its order: ``(field, reason)`` of each failure, and the parsed
    values when there is none. The checks are independent of each other, so the first failure is the one
    a stop-at-the-first-error validator would give."""
    errors: list[tuple[str, str]] = []
    for name in FIELDS:
        value: str = getattr(instr, name)
        if len(value) > MAX_FIELD_CHARS:
            errors.append((name, f"field {name}: longer than {MAX_FIELD_CHARS} chars"))
        elif "\x00" in value:
            # PostgreSQL text cannot hold NUL; reject here with a reason rather than fail the batch.
            errors.append((name, f"field {name}: contains a NUL character"))
    if not _CAMPAIGN_ID.fullmatch(instr.campaign_id):
        errors.append(("campaign_id", f"invalid campaign_id: {_show(instr.campaign_id)}"))
    # Unknown places are allowed (the geo table may grow), but an empty one is a broken row.
    for name in ("target_city", "target_state", "target_country"):
        if not getattr(instr, name):
            errors.append((name, f"empty {name}"))
    if instr.action not in ACTIONS:
        errors.append(("action", f"unknown action: {_show(instr.action)}"))
    for value, allowed, name in (
        (instr.target_gender, GENDER_VALUES, "target_gender"),
        (instr.target_device, DEVICE_VALUES, "target_device"),
        (instr.target_income_bucket, INCOME_VALUES, "target_income_bucket"),
    ):
        if value not in allowed:
            errors.append((name, f"unknown {name}: {_show(value)}"))
    age = _attempt(errors, "target_age_range", lambda: parse_age_range(instr.target_age_range))
    cpc = _attempt(errors, "cpc", lambda: _money(instr.cpc, "cpc"))
    cpa = _attempt(errors, "cpa", lambda: _money(instr.cpa, "cpa"))
    budget = _attempt(errors, "budget", lambda: _money(instr.budget, "budget"))
    if cpc is not None and cpc < 0:
        errors.append(("cpc", "cpc must be >= 0"))
    if cpa is not None and cpa < 0:
        errors.append(("cpa", "cpa must be >= 0"))
    if budget is not None and budget <= 0:
        errors.append(("budget", "budget must be positive"))
    flight: tuple[int, int] | None = None
    try:
        flight = parse_flight(instr.date_range, instr.time_range)
    except InstructionError as exc:
        errors.append((_flight_field(exc.reason), exc.reason))
        if _flight_field(exc.reason) == "date_range":
            # The date failed first; say whether the time range is bad too (one reason per field).
            _attempt(errors, "time_range", lambda: _parse_time_range(instr.time_range))
    if flight is not None and flight[1] <= flight[0]:
        errors.append(("date_range", "flight end <= start"))
    # Checked last, so a row that was bad before caps existed keeps its first reason.
    cap = _attempt(errors, "frequency_cap", lambda: parse_frequency_cap(instr.frequency_cap))
    pacing = _attempt(errors, "pacing_mode", lambda: parse_pacing_mode(instr.pacing_mode))
    if errors or age is None or cpc is None or cpa is None or budget is None or flight is None:
        return errors, None
    assert pacing is not None  # no error, so it parsed
    return errors, _Checked(age, cpc, cpa, budget, flight, cap, pacing)


def _parse_time_range(text: str) -> None:
    t0, t1 = parse_range(text, "time_range")
    _parse_time(t0, "time_range")
    _parse_time(t1, "time_range")


def field_errors(instr: CampaignInstruction) -> dict[str, str]:
    """Every field the Ad Manager would reject, with its reason (the first per field); {} when valid."""
    errors: dict[str, str] = {}
    for name, reason in _check(instr)[0]:
        errors.setdefault(name, reason)
    return errors


def mapping_errors(obj: Mapping[str, object]) -> dict[str, str]:
    """``field_errors`` of a decoded JSON object, plus the decoder's own reasons (a missing field, a value
    that is not a string) for each field the object gets wrong."""
    errors: dict[str, str] = {}
    values: dict[str, str] = {}
    for name in FIELDS:
        value = obj.get(name)
        if value is None and name not in obj:
            if name not in OPTIONAL_COLUMNS:
                errors[name] = f"missing field: {name}"
        elif not isinstance(value, str):
            errors[name] = f"field {name}: expected a string"
        else:
            values[name] = value
    # Placeholders for the broken fields, so every other field is still checked; their own reasons win.
    instr = CampaignInstruction(**{name: values.get(name, "") for name in FIELDS})
    for name, reason in field_errors(instr).items():
        errors.setdefault(name, reason)
    return errors


def enrich(instr: CampaignInstruction, *, version: int, now_s: int, slot_s: int = SLOT_S) -> Campaign:
    """Validate an instruction and normalize it into the full campaign state at ``version``.

    ``slot_s``: the configured pacing slot length (``Config.slot_s``), which the slot budget depends on;
    the default (the standard 10 minutes) suits callers that only validate."""
    errors, checked = _check(instr)
    if errors or checked is None:
        raise InstructionError(errors[0][1] if errors else "invalid instruction")
    (age_start, age_end), cpc, cpa, budget, (flight_start_s, flight_end_s), cap, pacing = checked
    return Campaign(
        campaign_id=instr.campaign_id,
        version=version,
        status=INACTIVE if instr.action == STOP else ACTIVE,
        action=instr.action,
        text=instr.text,
        category=instr.category,
        keywords=instr.keywords,
        target_gender=instr.target_gender,
        target_age_start=age_start,
        target_age_end=age_end,
        target_city=instr.target_city,
        target_state=instr.target_state,
        target_country=instr.target_country,
        target_income_bucket=instr.target_income_bucket,
        target_device=instr.target_device,
        cpc_micros=cpc,
        cpa_micros=cpa,
        cpm_units=cpm_units(cpc, cpa),
        budget_micros=budget,
        flight_start_s=flight_start_s,
        flight_end_s=flight_end_s,
        slot_budget_micros=planned_slot_budget(budget, flight_start_s, flight_end_s, slot_s=slot_s),
        updated_at_s=now_s,
        frequency_cap=cap,
        pacing_mode=pacing,
    )


def _format_dt(moment: datetime) -> tuple[str, str]:
    """Date and time in the seed's spelling: ``2025-09-12`` and ``5:00:00`` (hour not zero-padded)."""
    return moment.date().isoformat(), f"{moment.hour}:{moment.minute:02d}:{moment.second:02d}"


def format_flight(start: datetime, end: datetime) -> tuple[str, str]:
    """``(date_range, time_range)`` literals for a UTC flight, in the seed format."""
    d0, t0 = _format_dt(start.astimezone(UTC))
    d1, t1 = _format_dt(end.astimezone(UTC))
    return f"{{'start': '{d0}', 'end': '{d1}'}}", f"{{'start': '{t0}', 'end': '{t1}'}}"


def process_message(raw: bytes, *, version: int, now_s: int, slot_s: int = SLOT_S) -> Campaign:
    """The Ad Manager's pure message processor: raises ``InstructionError`` for a message bound to the DLQ."""
    return enrich(decode_instruction(raw), version=version, now_s=now_s, slot_s=slot_s)
