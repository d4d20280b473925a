"""``GET /v1/explain``: the live auction for a hypothetical request, on the admin service's copy of the index.

The query is parsed by the ad server's own parser (``adplatform.params``) and a ``user_id`` brings that
user's stored profile (one row of ``online_ads."user"``), so the request is understood exactly as serving
would; ``index.explain`` then runs the ad server's index lookup and auction code over it.
"""

from __future__ import annotations

import time
from typing import Final

from admin.error import AdminError
from admin.insight import Insight
from admin.insight_schema import ExplainedRequest, ExplainResult, Price, VerdictOut
from admin.state import AdminState
from adplatform import names
from adplatform.params import ParamError
from adplatform.profiles import ProfileTable, fetch_profile
from index.explain import BLOCKED_UNKNOWN, CampaignVerdict, explain
from index.money import cpm_units_to_decimal, format_micros

#: The id of a request that names no user: no profile, demographics from the query only.
NO_USER: Final = "explain"
#: Blocked campaigns whose budgets are read to say which budget blocked them (the rest: "budget or slot").
MAX_BLOCKED_LOOKUPS: Final = 1_000


def _cpm(units: int) -> str:
    return str(cpm_units_to_decimal(units))


async def blocked_reasons(state: AdminState, campaign_ids: list[str]) -> dict[str, str]:
    """Which budget blocks each campaign: the total (spent >= budget) or the current slot's (pacing)."""
    ids = campaign_ids[:MAX_BLOCKED_LOOKUPS]
    if not ids:
        return {}
    pipe = state.redis.pipeline(transaction=False)
    for cid in ids:
        pipe.hgetall(names.budget_key(cid))
    out: dict[str, str] = {}
    for cid, raw in zip(ids, await pipe.execute(), strict=True):
        h = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        if "budget" in h and h.get("spent", 0) >= h["budget"]:
            out[cid] = f"blocked: budget spent ({format_micros(h['spent'])} of {format_micros(h['budget'])})"
        elif "slot_budget" in h and h.get("slot_spent", 0) >= h["slot_budget"]:
            out[cid] = (
                f"blocked: slot budget spent ({format_micros(h['slot_spent'])} of "
                f"{format_micros(h['slot_budget'])} in slot {h.get('slot')}): paced until the next slot"
            )
        else:
            out[cid] = BLOCKED_UNKNOWN
    return out


def _verdict_out(v: CampaignVerdict) -> VerdictOut:
    m = v.mismatch
    return VerdictOut(
        campaign_id=v.campaign_id, verdict=v.verdict, reason=v.reason, detail=v.detail,
        bid=_cpm(v.bid_cpm_units), cpc=format_micros(v.cpc_micros), cpa=format_micros(v.cpa_micros),
        attribute=None if m is None else m.attribute, campaign_value=None if m is None else m.campaign_value,
        request_value=None if m is None else m.request_value,
        outbid_by=None if v.outbid_by_cpm_units is None else _cpm(v.outbid_by_cpm_units),
    )  # fmt: skip


async def explain_query(
    state: AdminState, insight: Insight, user_id: str | None, query: bytes
) -> ExplainResult:
    """Explain the request ``query`` (the serve route's parameters) of ``user_id`` at the current time."""
    if not insight.ready:
        raise AdminError(
            503, "The admin service's index is still loading; retry shortly.", headers={"Retry-After": "1"}
        )
    profiles = ProfileTable()
    uid = NO_USER if user_id is None else user_id
    try:
        request = insight.parser.build(uid, query, profiles)  # validates the query and the id first
        profile = None if user_id is None else await fetch_profile(state.pool, user_id)
        if profile is not None:
            profiles = ProfileTable({uid: profile})
            request = insight.parser.build(uid, query, profiles)
    except ParamError as exc:
        name = exc.reason.partition(":")[0] if ":" in exc.reason else "query"
        raise AdminError(422, "Invalid query.", errors={name: exc.reason}) from None
    index = insight.index
    blocked = [cid for cid in index.blocked if cid in index]
    why = await blocked_reasons(state, blocked)
    now_s = time.time()
    reserve = state.config.reserve_cpm_units
    out = explain(index, request, now_s, reserve_cpm_units=reserve, blocked_why=why)
    clearing = None
    if out.clearing_cpm_units is not None:
        clearing = Price(
            auction_cpm=_cpm(out.clearing_cpm_units),
            auction_cpc=None if out.auction_cpc_micros is None else format_micros(out.auction_cpc_micros),
            auction_cpa=None if out.auction_cpa_micros is None else format_micros(out.auction_cpa_micros),
        )
    r = out.request
    return ExplainResult(
        at=now_s,
        request=ExplainedRequest(
            user_id=uid,
            profile_found=profile is not None,
            device_type=r.device_type,
            city=r.city,
            state=r.state,
            country=r.country,
            age=r.age,
            gender=r.gender,
            income_bucket=r.income_bucket,
        ),
        reserve_cpm=_cpm(reserve),
        campaigns=len(out.verdicts),
        winner=out.winner,
        tied=list(out.tied),
        runner_up=out.runner_up,
        clearing=clearing,
        verdicts=[_verdict_out(v) for v in out.verdicts],
    )
