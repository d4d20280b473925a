"""``GET /ad/user/{user_id}/serve``: index lookup, second-price auction, signed request_id. The hot path.

A raw ASGI endpoint (no ``Request``/``Response`` objects): it reads the path parameter and the query
string from the scope, answers with pre-encoded JSON and leaves publishing to the background publisher.
"""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Final

import orjson
from starlette.types import Receive, Scope, Send

from adserver.error import ParamError
from adserver.fcap import capped_auction
from adserver.http.respond import detail, send_json
from adserver.state import StateRef
from adserver.sync.publisher import ServedItem
from adserver.token import RequestToken
from index.campaign import Campaign
from index.explain import LossReason

NO_FILL: Final = detail("No eligible ads found.")
NOT_READY: Final = detail("The ad index is still loading; retry shortly.")
#: Campaigns whose encoded body parts are kept at most (emptied when full: bounded memory).
MAX_BODIES: Final = 100_000


class AdBodies:
    """The 200 body of each campaign, encoded once around its request_id: ``head + request_id + tail``
    is byte for byte ``orjson.dumps({"text", "request_id", "campaign_id", "category"})``, since a
    request_id (an alphanumeric key id, ``.``, base64url) needs no JSON escaping. An updated campaign
    (a new ``Campaign`` object) is encoded again."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: dict[str, tuple[Campaign, bytes, bytes]] = {}

    def body(self, campaign: Campaign, request_id: str) -> bytes:
        parts = self._parts.get(campaign.campaign_id)
        if parts is not None:
            cached, head, tail = parts
            if cached is campaign:
                return head + request_id.encode("ascii") + tail
        if len(self._parts) >= MAX_BODIES:
            self._parts.clear()
        # Each value encoded on its own (no marker to split on, which a campaign's text could hold).
        head = b'{"text":' + orjson.dumps(campaign.text) + b',"request_id":"'
        tail = (
            b'","campaign_id":' + orjson.dumps(campaign.campaign_id)
            + b',"category":' + orjson.dumps(campaign.category) + b"}"
        )  # fmt: skip
        self._parts[campaign.campaign_id] = (campaign, head, tail)
        return head + request_id.encode("ascii") + tail


class ServeEndpoint:
    """The serve route as an ASGI app; one per worker, so the nonce counter is per process."""

    def __init__(self, ref: StateRef) -> None:
        self._ref = ref
        # Nonces: a random per-process prefix and a counter, unique without a syscall per request.
        self._nonce_prefix = secrets.token_hex(6)
        self._counter = itertools.count()
        self._bodies = AdBodies()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """As a Starlette route (HEAD, and requests the fast path leaves to the router)."""
        await self.respond(scope["path_params"]["user_id"], scope["query_string"], send)

    async def respond(self, user_id: str, query: bytes, send: Send) -> int:
        """Answer one serve request; returns the status sent."""
        state = self._ref.state
        if state is None:
            await send_json(send, 503, NOT_READY, retry_after_s=1)
            return 503
        try:
            request = state.parser.build(user_id, query, state.profiles)
        except ParamError as exc:
            state.stats.rejected += 1
            await send_json(send, 422, detail(exc.reason))
            return 422
        if not state.ready:
            state.stats.not_ready += 1
            await send_json(send, 503, NOT_READY, retry_after_s=1)
            return 503
        now_s = time.time()
        # Frequency caps: a Redis call only when a capped campaign is among the top bids (adserver.fcap).
        sat_out: dict[str, LossReason] = {}  # capped / throttled campaigns passed over: loss reasons
        result = await capped_auction(
            state.caps,
            state.index,
            request,
            now_s,
            reserve_cpm_units=state.config.reserve_cpm_units,
            rng=state.rng,
            sat_out=sat_out,
        )
        if result is None:
            state.stats.unfilled += 1
            await send_json(send, 404, NO_FILL)
            if state.sampler.pick():  # after the answer: only sampled requests pay for their loss reasons
                state.sampler.record(state.index, request, now_s, None, sat_out)
            return 404
        campaign = result.campaign
        issued_ms = int(now_s * 1000)
        request_id = state.signer.issue(
            RequestToken(
                nonce=f"{self._nonce_prefix}{next(self._counter):x}",
                campaign_id=campaign.campaign_id,
                campaign_version=campaign.version,
                issued_ms=issued_ms,
                user_id=request.user_id,
                clearing_cpm_units=result.clearing_cpm_units,
                auction_cpc_micros=result.auction_cpc_micros,
                auction_cpa_micros=result.auction_cpa_micros,
                user_age=request.age,
                user_gender=request.gender,
                user_device_type=request.device_type,
                user_city=request.city,
            )
        )
        state.publisher.offer(
            ServedItem(
                request_id=request_id,
                campaign_id=campaign.campaign_id,
                served_at_ms=issued_ms,
                clearing_cpm_units=result.clearing_cpm_units,
                auction_cpc_micros=result.auction_cpc_micros,
                auction_cpa_micros=result.auction_cpa_micros,
                bidders=result.bidders,
                request=request,
            )
        )
        state.stats.served += 1
        state.stats.bidders.observe(result.bidders)
        await send_json(send, 200, self._bodies.body(campaign, request_id))
        if state.sampler.pick():  # after the answer: only sampled requests pay for their loss reasons
            state.sampler.record(state.index, request, now_s, result, sat_out)
        return 200
