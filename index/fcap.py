"""Frequency caps: at most ``count`` ads of a campaign per user per window (``3/1h``, ``5/flight``).

The pure part: the cap's spelling and bounds, and the *ladder* of a request: the ranked candidates an
auction with caps needs, with the capped ones the cap store must check (``budget.fcap_redis``), in order.

Window semantics: a sliding window. An ad served at ``t`` counts against the cap while ``now - t < window``
(``flight``: for the whole flight). The count is taken when the ad is served: an ad served counts as seen.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, NamedTuple

import msgspec

if TYPE_CHECKING:  # index.campaign imports this module for the field type
    from index.campaign import Campaign

#: Seconds per window unit.
UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
#: The longest window: a year.
MAX_WINDOW_S: Final = 365 * 86_400
#: The largest cap count: the store keeps one entry per ad served in the window, so this bounds its memory
#: per (user, campaign).
MAX_COUNT: Final = 1_000
#: The spelling of a flight-long window.
FLIGHT: Final = "flight"
#: Capped candidates one request may consider, best bids first; the rest sit that request out (neither
#: win nor set the price). Bounds the store's work per request.
MAX_CAPPED: Final = 8

_DIGITS: Final = frozenset("0123456789")


def _number(text: str, limit: int) -> int | None:
    """A plain run of ASCII digits (no sign, space or underscore, unlike ``int``), at most ``limit`` long."""
    if not text or len(text) > limit or not set(text) <= _DIGITS:
        return None
    return int(text)


class FrequencyCapError(ValueError):
    """A cap that cannot be parsed or is out of bounds; the message is the reason."""


class FrequencyCap(msgspec.Struct, frozen=True, kw_only=True):
    """At most ``count`` ads per user per ``window_s`` seconds; ``window_s`` 0 means the whole flight."""

    count: int
    window_s: int

    @property
    def flight(self) -> bool:
        return self.window_s == 0

    def window_ms(self, campaign: Campaign) -> int:
        """The sliding window in milliseconds; a flight-long window covers the whole flight."""
        if self.window_s == 0:
            return max(campaign.flight_end_s - campaign.flight_start_s, 1) * 1000
        return self.window_s * 1000

    def ttl_ms(self, campaign: Campaign, now_s: float) -> int:
        """How long the store keeps the user's counts after an ad: the window, or until the flight ends."""
        if self.window_s == 0:
            return max(int((campaign.flight_end_s - now_s) * 1000), 1000)
        return self.window_s * 1000


def parse_cap(text: str) -> FrequencyCap | None:
    """``"3/1h"`` → ``FrequencyCap(count=3, window_s=3600)``; empty → ``None`` (uncapped).

    Raises ``FrequencyCapError`` with the reason for anything else."""
    spelled = text.strip()
    if not spelled:
        return None
    head, slash, window = spelled.partition("/")
    count = _number(head, 6)
    amount = _number(window[:-1], 8) if window[-1:] in UNITS else None
    if not slash or count is None or (amount is None and window != FLIGHT):
        raise FrequencyCapError("expected N/window, e.g. 3/1h, 10/1d or 5/flight (units s, m, h, d)")
    if not 1 <= count <= MAX_COUNT:
        raise FrequencyCapError(f"count must be 1 to {MAX_COUNT}, got {count}")
    if amount is None:
        return FrequencyCap(count=count, window_s=0)
    window_s = amount * UNITS[window[-1]]
    if window_s <= 0:
        raise FrequencyCapError("window must be positive")
    if window_s > MAX_WINDOW_S:
        raise FrequencyCapError("window longer than 365d")
    return FrequencyCap(count=count, window_s=window_s)


def format_cap(cap: FrequencyCap | None) -> str:
    """The canonical spelling, in the largest whole unit: ``FrequencyCap(3, 3600)`` → ``"3/1h"``;
    ``None`` → ``""``."""
    if cap is None:
        return ""
    if cap.window_s == 0:
        return f"{cap.count}/{FLIGHT}"
    for unit in ("d", "h", "m"):
        if cap.window_s % UNITS[unit] == 0:
            return f"{cap.count}/{cap.window_s // UNITS[unit]}{unit}"
    return f"{cap.count}/{cap.window_s}s"


class Ladder(NamedTuple):
    """What an auction with caps works on for one request.

    ``ranked``: the candidates that can win or set the price, highest bid first, equal bids shuffled (the
    auction's random tie-break, drawn once). ``capped``: the capped ones ranked above the first uncapped
    one, in that order: the cap store picks the first of them under its cap; if none is, the first uncapped
    candidate wins."""

    ranked: list[Campaign]
    capped: list[Campaign]


def ladder(ranked: Iterable[Campaign], *, rng: random.Random, max_capped: int = MAX_CAPPED) -> Ladder:
    """Cut the eligible candidates (highest bid first) down to what the auction with caps needs.

    Every candidate down to the first uncapped one's bid can win (the capped ones above it may all be at
    their cap); the first bid strictly below that prices the last possible winner, so the walk stops there.
    Capped candidates beyond the first ``max_capped`` sit the request out."""
    out: list[Campaign] = []
    taken = 0
    floor: int | None = None
    for c in ranked:
        if c.frequency_cap is not None:
            if taken >= max_capped:
                continue
            taken += 1
        if floor is not None and c.cpm_units < floor:
            out.append(c)
            break
        if c.frequency_cap is None and floor is None:
            floor = c.cpm_units
        out.append(c)
    _shuffle_ties(out, rng)
    capped: list[Campaign] = []
    for c in out:
        if c.frequency_cap is None:
            break
        capped.append(c)
    return Ladder(out, capped)


def _shuffle_ties(ranked: list[Campaign], rng: random.Random) -> None:
    start = 0
    for i in range(1, len(ranked) + 1):
        if i == len(ranked) or ranked[i].cpm_units != ranked[start].cpm_units:
            if i - start > 1:
                group = ranked[start:i]
                rng.shuffle(group)
                ranked[start:i] = group
            start = i
