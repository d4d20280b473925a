"""The in-memory targeting index: campaigns by id, and candidate lists sorted by bid for the hot path.

How a lookup avoids scanning every campaign: location is the most selective dimension and the only one
with a hierarchy, so the index keeps, per *location key* (a resolved request location), the candidate list
of every active campaign whose location targeting accepts it, sorted by ``cpm_units`` descending. The other
attributes (device, gender, income, age, flight, blocked) are checked while walking that list from the top,
which for an auction stops after the winner group and the first strictly lower eligible bid.

Each campaign is stored once as an ``_Entry`` tuple, shared by every list it is in (8 bytes per list).
Device, gender and income are pre-compiled to bit masks so each check is one AND (``All`` is ``-1``).
Lists are built lazily per location key and then kept up to date by each ``apply`` (binary search and an
O(n) pointer move per affected list), so a bootstrap of many campaigns costs nothing until the first query.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from typing import Any, Final, cast

from index.campaign import ACTIVE, ALL, Campaign
from index.geo import DEFAULT_GEO, GeoTable
from index.results import TopBids
from index.targeting import AdRequest

#: One indexed campaign, precompiled for the eligibility checks: (cpm_units, flight_start_s, flight_end_s,
#: device_mask, gender_mask, income_mask, age_lo, age_hi, campaign_id, campaign). The lookup loops unpack
#: it in this order; every other read goes through the named getters below, so no other code knows a
#: position. An exact tuple rather than a NamedTuple: CPython 3.11 unpacks a tuple subclass about 3x
#: slower (it misses the exact-tuple fast path), which measured +12% on lookup and auction over 100k
#: campaigns and +50% on a full eligibility walk.
#: Stored as a variable-length tuple on purpose: compiled by mypyc (``adplatform.native``), a fixed-length
#: tuple is kept unboxed and a new copy is boxed into every list it joins, which doubled the index's
#: memory. The lookup loops read the lists through ``_fixed``: each entry unpacked into native values.
_Entry = tuple[Any, ...]
_Fixed = tuple[int, int, int, int, int, int, int, int, str, Campaign]
#: Named reads of an entry: C-level getters, as fast as an index and usable as sort keys.
_cpm_units: Final[Callable[[_Entry], int]] = itemgetter(0)
_flight_end_s: Final[Callable[[_Entry], int]] = itemgetter(2)
_campaign_id: Final[Callable[[_Entry], str]] = itemgetter(8)
_campaign: Final[Callable[[_Entry], Campaign]] = itemgetter(9)
_LocKey = tuple[str | None, str | None, str | None]
_LocTarget = tuple[str, str, str]

#: Age of a request without one: below every real range, so it matches only "any age" (0–0) campaigns.
_NO_AGE: Final = -(1 << 62)
_ANY_AGE: Final = (_NO_AGE, 1 << 62)
#: Batch size from which ``apply_all`` rebuilds candidate lists instead of updating them in place
#: (an update moves ~n pointers per list, a rebuild sorts ~n entries: break-even near a thousand).
_BULK_BATCH: Final = 1_000
#: Bit of a value that no campaign targets, or that the request lacks: only ``All`` (all bits) matches it.
_UNKNOWN_BIT: Final = 1
#: Request locations (as the request spells them) whose candidate-list key is remembered, at most.
_MAX_LOC_KEYS: Final = 65_536


def _fixed(entries: list[_Entry]) -> list[_Fixed]:
    """The same list, typed for the lookup loops (no copy)."""
    return cast("list[_Fixed]", entries)


def _order(entry: _Entry) -> tuple[int, str]:
    """Sort key of candidate lists: highest bid first, then campaign id (a total order, for bisect)."""
    return (-_cpm_units(entry), _campaign_id(entry))


class _MaskVocab:
    """Gives each targeted value of one attribute its own bit, so matching is ``mask & bit``."""

    def __init__(self) -> None:
        self._bits: dict[str, int] = {}

    def campaign_mask(self, target: str) -> int:
        if target == ALL:
            return -1
        bit = self._bits.get(target)
        if bit is None:
            # Bits only grow, bounded by the distinct values campaigns target (a handful per attribute).
            bit = 1 << (len(self._bits) + 1)
            self._bits[target] = bit
        return bit

    def request_bit(self, value: str | None) -> int:
        if value is None:
            return _UNKNOWN_BIT
        return self._bits.get(value, _UNKNOWN_BIT)


def _loc_target(campaign: Campaign) -> _LocTarget:
    return (campaign.target_city, campaign.target_state, campaign.target_country)


def _same_place(old: _Entry, new: _Entry) -> bool:
    """Whether two entries of one campaign sit at the same place in the same candidate lists."""
    return _cpm_units(old) == _cpm_units(new) and _loc_target(_campaign(old)) == _loc_target(_campaign(new))


def _position(entries: list[_Entry], entry: _Entry) -> int:
    """Where ``entry`` sits in a candidate list (which holds it)."""
    i = bisect.bisect_left(entries, _order(entry), key=_order)
    # The order is total (campaign id breaks ties), so the entry sits exactly at i.
    assert entries[i] == entry
    return i


def _loc_accepts(target: _LocTarget, key: _LocKey) -> bool:
    """Whether a campaign with this location targeting belongs in the candidate list of ``key``."""
    return all(t in (ALL, k) for t, k in zip(target, key, strict=True))


class TargetingIndex:
    """All campaigns by id (inactive ones too), and the active ones indexed for eligibility and auctions.

    Fold of ``ad-changes``: ``apply`` keeps the highest ``version`` per campaign. Campaigns in the
    ``blocked`` set (total or slot budget spent) stay indexed but are skipped by every lookup.
    """

    def __init__(self, geo: GeoTable = DEFAULT_GEO, blocked: set[str] | None = None) -> None:
        self._geo = geo
        # Shared by reference on purpose: the budget layer may own the set and mutate it directly.
        self.blocked: set[str] = blocked if blocked is not None else set()
        self._by_id: dict[str, Campaign] = {}
        self._entries: dict[str, _Entry] = {}
        self._by_loc: dict[_LocTarget, dict[str, _Entry]] = {}
        # How many indexed campaigns target each city / state / country (All excluded): a request value
        # nobody targets is mapped to None, so request garbage cannot create candidate lists.
        self._loc_counts: tuple[dict[str, int], dict[str, int], dict[str, int]] = ({}, {}, {})
        self._lists: dict[_LocKey, list[_Entry]] = {}
        # Request (city, state, country) → its candidate-list key: resolving the location and checking
        # what is targeted cost a fifth of an auction. Emptied whenever the targeted values change.
        self._loc_keys: dict[_LocKey, _LocKey] = {}
        self._device = _MaskVocab()
        self._gender = _MaskVocab()
        self._income = _MaskVocab()

    # ---- state -------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of indexed campaigns: Active ones (not yet pruned after their flight ended)."""
        return len(self._entries)

    def __contains__(self, campaign_id: object) -> bool:
        return campaign_id in self._by_id

    def get(self, campaign_id: str) -> Campaign | None:
        """Latest known state of a campaign, active or not."""
        return self._by_id.get(campaign_id)

    def indexed(self) -> Iterator[Campaign]:
        """The campaigns lookups consider (Active), in no particular order."""
        return map(_campaign, self._entries.values())

    def campaigns(self) -> Iterator[Campaign]:
        """Every known campaign's latest state (stopped and ended ones too), in no particular order."""
        return iter(self._by_id.values())

    @property
    def geo(self) -> GeoTable:
        """The geo table lookups resolve request locations with."""
        return self._geo

    def apply(self, campaign: Campaign) -> bool:
        """Insert, update or stop a campaign; a version not newer than the stored one is ignored.

        Returns whether anything changed.
        """
        cid = campaign.campaign_id
        old = self._by_id.get(cid)
        if old is not None and campaign.version <= old.version:
            return False
        self._by_id[cid] = campaign
        old_entry = self._entries.pop(cid, None)
        entry = self._make_entry(campaign) if campaign.status == ACTIVE else None
        if old_entry is not None:
            if entry is not None and _same_place(old_entry, entry):
                # Same bid and location (a budget, flight, text or audience edit): the entry keeps its
                # place in every list, so it is swapped there instead of moved out and back in.
                self._entries[cid] = entry
                self._replace(old_entry, entry)
                return True
            self._unindex(old_entry)
        if entry is not None:
            self._entries[cid] = entry
            self._index(entry)
        return True

    def apply_all(self, campaigns: Iterable[Campaign]) -> int:
        """``apply`` each campaign in order; returns how many changed something.

        A large batch drops the candidate lists first and rebuilds them after: one sort per list is
        cheaper than that many O(n) inserts into it.
        """
        batch = list(campaigns)
        rebuild = len(batch) >= _BULK_BATCH and bool(self._lists)
        if rebuild:
            self._lists.clear()
        changed = sum(self.apply(c) for c in batch)
        if rebuild:
            self.warm()
        return changed

    def prune(self, now_s: float) -> int:
        """Unindex campaigns whose flight has ended (they stay retrievable by id); returns how many.

        Ended campaigns are skipped by lookups anyway; pruning keeps them from being walked over.
        """
        return self.prune_ids(self.ended(now_s), now_s)

    def ended(self, now_s: float) -> list[str]:
        """Ids of the indexed campaigns whose flight has ended at ``now_s`` (what ``prune`` would unindex)."""
        return [_campaign_id(e) for e in self._entries.values() if _flight_end_s(e) <= now_s]

    def prune_ids(self, campaign_ids: Iterable[str], now_s: float) -> int:
        """Unindex those of ``campaign_ids`` still indexed with their flight ended at ``now_s`` (one updated
        since ``ended`` named it is checked again); returns how many. Lets a caller prune a few at a time."""
        pruned = 0
        for cid in campaign_ids:
            entry = self._entries.get(cid)
            if entry is not None and _flight_end_s(entry) <= now_s:
                del self._entries[cid]
                self._unindex(entry)
                pruned += 1
        return pruned

    def block(self, campaign_id: str) -> None:
        """Skip this campaign in lookups (budget or slot budget spent) until ``unblock``."""
        self.blocked.add(campaign_id)

    def unblock(self, campaign_id: str) -> None:
        self.blocked.discard(campaign_id)

    def warm(self) -> int:
        """Build the candidate lists of every known city and of a request without a location, so the
        first requests after a bootstrap do not pay for it; returns the number of lists built."""
        before = len(self._lists)
        locations: list[tuple[str | None, str | None, str | None]] = [(None, None, None)]
        locations += [(c.name, None, None) for c in self._geo.cities]
        for city, state, country in locations:
            self._candidates(AdRequest(user_id="", city=city, state=state, country=country))
        return len(self._lists) - before

    # ---- lookups -----------------------------------------------------------------------------------

    def eligible(self, request: AdRequest, now_s: float) -> list[Campaign]:
        """Every campaign eligible for the request at ``now_s`` and not blocked, highest bid first."""
        out: list[Campaign] = []
        dbit, gbit, ibit, age = self._request_bits(request)
        blocked = self.blocked
        for _cpm, start, end, dm, gm, im, lo, hi, cid, c in _fixed(self._candidates(request)):
            if (
                start <= now_s < end
                and dm & dbit
                and gm & gbit
                and im & ibit
                and lo <= age <= hi
                and cid not in blocked
            ):
                out.append(c)
        return out

    def matching(self, request: AdRequest, now_s: float) -> Iterator[Campaign]:
        """Live campaigns whose targeting accepts the request, blocked ones and any bid included, highest
        bid first (ties by campaign id). Lazy: for the loss reasons of sampled requests and for explain,
        never on the serve path."""
        dbit, gbit, ibit, age = self._request_bits(request)
        for _cpm, start, end, dm, gm, im, lo, hi, _cid, c in _fixed(self._candidates(request)):
            if start <= now_s < end and dm & dbit and gm & gbit and im & ibit and lo <= age <= hi:
                yield c

    def ranked(self, request: AdRequest, now_s: float, reserve_cpm_units: int = 0) -> Iterator[Campaign]:
        """The eligible campaigns (as ``eligible``, at or above the reserve), highest bid first, lazily:
        the auction with frequency caps (``index.fcap.ladder``) walks only as far as it needs."""
        dbit, gbit, ibit, age = self._request_bits(request)
        blocked = self.blocked
        for cpm, start, end, dm, gm, im, lo, hi, cid, c in _fixed(self._candidates(request)):
            if cpm < reserve_cpm_units:
                return
            if (
                start <= now_s < end
                and dm & dbit
                and gm & gbit
                and im & ibit
                and lo <= age <= hi
                and cid not in blocked
            ):
                yield c

    def matching_head(
        self, request: AdRequest, now_s: float, *, max_open: int, max_scanned: int
    ) -> tuple[list[Campaign], int | None]:
        """The head of ``matching``: stops once ``max_open`` matching campaigns that are not blocked have
        been found, or ``max_scanned`` candidates looked at. Returns the matching campaigns found (blocked
        ones included), highest bid first, and the bid at which the walk stopped early (None: it saw every
        candidate). Bounded, so a sampled request costs the same on 5k or 1M campaigns."""
        dbit, gbit, ibit, age = self._request_bits(request)
        blocked = self.blocked
        found: list[Campaign] = []
        open_ = 0
        for scanned, (cpm, start, end, dm, gm, im, lo, hi, cid, c) in enumerate(
            _fixed(self._candidates(request))
        ):
            if open_ >= max_open or scanned >= max_scanned:
                return found, cpm
            if start <= now_s < end and dm & dbit and gm & gbit and im & ibit and lo <= age <= hi:
                found.append(c)
                if cid not in blocked:
                    open_ += 1
        return found, None

    def top(self, request: AdRequest, now_s: float, reserve_cpm_units: int = 0) -> TopBids | None:
        """The auction's head: eligible campaigns at the top bid and the second bid, or ``None``.

        Campaigns bidding below the reserve are not eligible. Walks the sorted candidates only until
        the outcome is decided: after the winner group, at the first strictly lower eligible bid.
        """
        dbit, gbit, ibit, age = self._request_bits(request)
        blocked = self.blocked
        entries = iter(_fixed(self._candidates(request)))
        for cpm, start, end, dm, gm, im, lo, hi, cid, c in entries:
            if cpm < reserve_cpm_units:
                return None  # sorted: everything after bids lower still
            if (
                start <= now_s < end
                and dm & dbit
                and gm & gbit
                and im & ibit
                and lo <= age <= hi
                and cid not in blocked
            ):
                top_cpm = cpm
                winners = [c]
                break
        else:
            return None
        second: int | None = None
        for cpm, start, end, dm, gm, im, lo, hi, cid, c in entries:
            if cpm < reserve_cpm_units or (cpm < top_cpm and len(winners) > 1):
                break  # the tie group is complete and already sets the second price
            if (
                start <= now_s < end
                and dm & dbit
                and gm & gbit
                and im & ibit
                and lo <= age <= hi
                and cid not in blocked
            ):
                if cpm == top_cpm:
                    winners.append(c)
                else:
                    second = cpm
                    break
        if len(winners) > 1:
            second = top_cpm
        return TopBids(tuple(winners), top_cpm, second)

    # ---- internals ---------------------------------------------------------------------------------

    def _request_bits(self, request: AdRequest) -> tuple[int, int, int, int]:
        age = request.age
        return (
            self._device.request_bit(request.device_type),
            self._gender.request_bit(request.gender),
            self._income.request_bit(request.income_bucket),
            _NO_AGE if age is None else age,
        )

    def _candidates(self, request: AdRequest) -> list[_Entry]:
        spelled = (request.city, request.state, request.country)
        key = self._loc_keys.get(spelled)
        if key is None:
            key = self._loc_key(spelled)
        entries = self._lists.get(key)
        if entries is None:
            entries = self._build(key)
        return entries

    def _loc_key(self, spelled: _LocKey) -> _LocKey:
        city, state, country = self._geo.resolve(*spelled)
        cities, states, countries = self._loc_counts
        key: _LocKey = (
            city if city in cities else None,
            state if state in states else None,
            country if country in countries else None,
        )
        if len(self._loc_keys) >= _MAX_LOC_KEYS:
            self._loc_keys.clear()  # bounded: a flood of distinct request locations cannot grow memory
        self._loc_keys[spelled] = key
        return key

    def _build(self, key: _LocKey) -> list[_Entry]:
        city, state, country = key
        found: list[_Entry] = []
        for c in (ALL,) if city is None else (city, ALL):
            for s in (ALL,) if state is None else (state, ALL):
                for k in (ALL,) if country is None else (country, ALL):
                    posting = self._by_loc.get((c, s, k))
                    if posting:
                        found.extend(posting.values())
        # Same order as _order, via two stable C-level sorts: several times faster than a tuple key.
        found.sort(key=_campaign_id)
        found.sort(key=_cpm_units, reverse=True)
        self._lists[key] = found
        return found

    def _make_entry(self, c: Campaign) -> _Entry:
        # Read as objects (``Any``): compiled, an ``int`` read is unboxed, then boxed into a new object for
        # the tuple (+116 bytes per campaign measured); as objects the entry shares the campaign's ints.
        v: Any = c
        lo: Any = v.target_age_start
        hi: Any = v.target_age_end
        if lo == 0 and hi == 0:
            lo, hi = _ANY_AGE
        return (
            v.cpm_units,
            v.flight_start_s,
            v.flight_end_s,
            self._device.campaign_mask(c.target_device),
            self._gender.campaign_mask(c.target_gender),
            self._income.campaign_mask(c.target_income_bucket),
            lo,
            hi,
            c.campaign_id,
            c,
        )  # the order of _Entry

    def _index(self, entry: _Entry) -> None:
        target = _loc_target(_campaign(entry))
        self._by_loc.setdefault(target, {})[_campaign_id(entry)] = entry
        for value, counts in zip(target, self._loc_counts, strict=True):
            if value != ALL:
                n = counts.get(value, 0)
                if n == 0:
                    self._loc_keys.clear()  # a value now targeted: keys that mapped it to None are stale
                counts[value] = n + 1
        for key, entries in self._lists.items():
            if _loc_accepts(target, key):
                bisect.insort(entries, entry, key=_order)

    def _replace(self, old: _Entry, new: _Entry) -> None:
        """Put ``new`` where ``old`` is (``_same_place``): in its location's posting and in every list."""
        target = _loc_target(_campaign(new))
        self._by_loc[target][_campaign_id(new)] = new
        for key, entries in self._lists.items():
            if _loc_accepts(target, key):
                entries[_position(entries, old)] = new

    def _unindex(self, entry: _Entry) -> None:
        target = _loc_target(_campaign(entry))
        posting = self._by_loc[target]
        del posting[_campaign_id(entry)]
        if not posting:
            del self._by_loc[target]
        for key, entries in self._lists.items():
            if _loc_accepts(target, key):
                del entries[_position(entries, entry)]
        gone: list[tuple[int, str]] = []
        for pos, (value, counts) in enumerate(zip(target, self._loc_counts, strict=True)):
            if value != ALL:
                counts[value] -= 1
                if counts[value] == 0:
                    del counts[value]
                    gone.append((pos, value))
        if gone:
            self._loc_keys.clear()  # a value no longer targeted: keys naming it are stale
        for pos, value in gone:
            # Keys naming a value nobody targets any more are no longer produced by lookups: free them.
            for key in [k for k in self._lists if k[pos] == value]:
                del self._lists[key]
