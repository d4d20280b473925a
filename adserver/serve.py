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
from adserver.fcap import CapCheck, begin_auction, finish_auction
from adserver.http.respond import detail, send_json
from adserver.state import ServerState, StateRef
from adserver.sync.publisher import ServedItem
from adserver.token import RequestToken
from index.campaign import Campaign
from index.explain import LossReason
from index.results import AuctionResult
from index.targeting import AdRequest

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


class Reply:
    """One serve answer: status, encoded body, ``retry-after`` (503) and, for an auction, what a sampled
    request records after the answer is written."""

    __slots__ = ("body", "retry_after_s", "sample", "status")

    def __init__(
        self, status: int, body: bytes, retry_after_s: int | None = None, sample: _Sample | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s
        self.sample = sample


class _Sample:
    __slots__ = ("now_s", "request", "result", "sat_out")

    def __init__(
        self, request: AdRequest, now_s: float, result: AuctionResult | None, sat_out: dict[str, LossReason]
    ) -> None:
        self.request = request
        self.now_s = now_s
        self.result = result
        self.sat_out = sat_out


class CapWait:
    """A serve request whose auction waits for the frequency-cap store (``ServeEndpoint.finish``)."""

    __slots__ = ("check", "now_s", "request", "sat_out", "state")

    def __init__(
        self,
        state: ServerState,
        request: AdRequest,
        now_s: float,
        check: CapCheck,
        sat_out: dict[str, LossReason],
    ) -> None:
        self.state = state
        self.request = request
        self.now_s = now_s
        self.check = check
        self.sat_out = sat_out


class ServeEndpoint:
    """The serve route as an ASGI app; one per worker, so the nonce counter is per process.

    ``begin`` answers synchronously unless a cap check is needed (``CapWait``, finished by ``finish``):
    the ASGI path (``respond``) and uvicorn's direct path (``adserver.http.protocol``) share both, so
    they answer the same."""

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
        reply = self.begin(user_id, query)
        if isinstance(reply, CapWait):
            reply = await self.finish(reply)
        await send_json(send, reply.status, reply.body, retry_after_s=reply.retry_after_s)
        self.after(reply)
        return reply.status

    def begin(self, user_id: str, query: bytes) -> Reply | CapWait:
        """The answer, or the auction waiting for the cap store."""
        state = self._ref.state
        if state is None:
            return Reply(503, NOT_READY, 1)
        try:
            request = state.parser.build(user_id, query, state.profiles)
        except ParamError as exc:
            state.stats.rejected += 1
            return Reply(422, detail(exc.reason))
        if not state.ready:
            state.stats.not_ready += 1
            return Reply(503, NOT_READY, 1)
        now_s = time.time()
        # Frequency caps: a Redis call only when a capped campaign is among the top bids (adserver.fcap).
        sat_out: dict[str, LossReason] = {}  # capped / throttled campaigns passed over: loss reasons
        result = begin_auction(
            state.caps,
            state.index,
            request,
            now_s,
            reserve_cpm_units=state.config.reserve_cpm_units,
            rng=state.rng,
            sat_out=sat_out,
        )
        if isinstance(result, CapCheck):
            return CapWait(state, request, now_s, result, sat_out)
        return self._settled(state, request, now_s, result, sat_out)

    async def finish(self, wait: CapWait) -> Reply:
        """The answer of a request ``begin`` left to the cap store."""
        state = wait.state
        result = await finish_auction(
            state.caps,
            wait.check,
            wait.request.user_id,
            wait.now_s,
            reserve_cpm_units=state.config.reserve_cpm_units,
            sat_out=wait.sat_out,
        )
        return self._settled(state, wait.request, wait.now_s, result, wait.sat_out)

    def after(self, reply: Reply) -> None:
        """Once the answer is written: only sampled requests pay for their loss reasons."""
        sample = reply.sample
        if sample is not None:
            state = self._ref.state
            if state is not None and state.sampler.pick():
                state.sampler.record(state.index, sample.request, sample.now_s, sample.result, sample.sat_out)

    def _settled(
        self,
        state: ServerState,
        request: AdRequest,
        now_s: float,
        result: AuctionResult | None,
        sat_out: dict[str, LossReason],
    ) -> Reply:
        if result is None:
            state.stats.unfilled += 1
            return Reply(404, NO_FILL, None, _Sample(request, now_s, None, sat_out))
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
        return Reply(
            200, self._bodies.body(campaign, request_id), None, _Sample(request, now_s, result, sat_out)
        )
