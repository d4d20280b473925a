"""``GET /v1/campaigns/{id}/diagnosis``: why a campaign serves or not, over the sampled real traffic.

Each sample of the window (``admin.insight.SampleWindow``) is classified for the campaign: won; lost with
the reason the ad server recorded (blocked, below reserve, tie, outbid); not matched, with the first
targeting attribute that rejects it (recomputed with ``index.explain.first_mismatch`` on the sample's
attributes and the campaign's current state); or not live at the sample's time (stopped, flight). A
campaign that matched but is not among the losses the ad server listed ranked below its listing bound:
outbid (or below reserve by its bid; blocked if it is blocked now). The cost is one pass over the window's
samples per call.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Final

from admin.error import AdminError
from admin.explain import blocked_reasons
from admin.insight import Insight
from admin.insight_schema import Diagnosis, Mismatches, Share
from admin.state import AdminState
from adplatform.sample import RequestSample
from index.explain import first_mismatch, static_reason
from index.geo import Location
from index.targeting import AdRequest

#: How long a diagnosis waits for the samples already published to reach the window.
CATCH_UP_S: Final = 3.0


def _share(count: int, total: int) -> Share:
    return Share(count=count, share=round(count / total, 4) if total else 0.0)


async def diagnose(state: AdminState, insight: Insight, campaign_id: str, window_s: int) -> Diagnosis:
    campaign = insight.index.get(campaign_id)
    if campaign is None:
        raise AdminError(404, f"No campaign {campaign_id} in the admin service's index.")
    await insight.window.catch_up(CATCH_UP_S)
    now_s = time.time()
    samples = insight.window.recent(now_s, window_s)
    default_country = insight.config.default_country
    blocked = insight.index.blocked
    won = matched = not_live = 0
    lost: Counter[str] = Counter()
    mismatch: Counter[str] = Counter()
    mismatch_value: dict[str, str] = {}
    for s in samples:
        if s.winner == campaign_id:
            won += 1
            matched += 1
            continue
        reason = next((loss.reason for loss in s.losses if loss.campaign_id == campaign_id), None)
        if reason is not None:
            matched += 1
            lost[reason] += 1
            continue
        location = Location(s.city, s.state, s.country or default_country)
        request = _request(s)
        miss = first_mismatch(campaign, request, location)
        if miss is not None:
            mismatch[miss.attribute] += 1
            mismatch_value[miss.attribute] = miss.campaign_value
            continue
        if static_reason(campaign, s.at_ms / 1000) is not None:
            not_live += 1
            continue
        matched += 1
        if s.floor_cpm_units is not None and campaign.cpm_units <= s.floor_cpm_units:
            # Below where the ad server's bounded walk stopped: outbid by every listed bid, unless blocked
            # (told by the current blocked set: the walk did not reach it) or below the reserve.
            if campaign_id in blocked:
                lost["blocked"] += 1
            else:
                lost["below_reserve" if campaign.cpm_units < s.reserve_cpm_units else "outbid"] += 1
        else:
            lost["unexplained"] += 1  # the sample predates the campaign's current state
    total = len(samples)
    lost_total = sum(lost.values())
    not_matched = sum(mismatch.values())
    top = mismatch.most_common(1)
    static: list[str] = []
    current = static_reason(campaign, now_s)
    if current is not None:
        static.append(f"{current.reason}: {current.detail}")
    if campaign_id in insight.index.blocked:
        static.append((await blocked_reasons(state, [campaign_id]))[campaign_id])
    return Diagnosis(
        campaign_id=campaign_id,
        window_s=min(window_s, insight.window.window_s),
        samples=total,
        matched=_share(matched, total),
        won=_share(won, total),
        lost=_share(lost_total, total),
        lost_by_reason={reason: _share(n, lost_total) for reason, n in lost.most_common()},
        not_matched=_share(not_matched, total),
        not_live=_share(not_live, total),
        top_mismatch=Mismatches(
            attribute=top[0][0] if top else None,
            count=top[0][1] if top else 0,
            share=round(top[0][1] / not_matched, 4) if top else 0.0,
            campaign_value=mismatch_value.get(top[0][0]) if top else None,
            by_attribute=dict(mismatch.most_common()),
        ),
        static=static,
    )


def _request(s: RequestSample) -> AdRequest:
    return AdRequest(
        user_id="", device_type=s.device_type, city=s.city, state=s.state, country=s.country, age=s.age,
        gender=s.gender, income_bucket=s.income_bucket,
    )  # fmt: skip
