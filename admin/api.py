"""The ``/v1`` endpoints: each checks the caller's role, parses its input, calls one function, and
encodes a Struct of ``admin.schema``. Errors are ``AdminError``s, turned into JSON by ``admin.app``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from admin import dlq, reads, store, writes
from admin.auth import require
from admin.body import json_object, read_body
from admin.error import AdminError
from admin.schema import WriteResult
from admin.state import AdminState, StateRef
from admin.wait import wait_applied

Endpoint = Callable[[Request], Awaitable[Response]]
_encoder: Final = msgspec.json.Encoder()
STATUSES: Final = ("Active", "Inactive")
MAX_PARTITION: Final = 2**31 - 1  # Kafka's int32
MAX_OFFSET: Final = 2**63 - 1  # Kafka's int64
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})


def json_response(body: msgspec.Struct, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


def state_of(ref: StateRef) -> AdminState:
    if ref.state is None:
        raise AdminError(503, "Starting up.")
    return ref.state


def _int_param(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not lo <= int(raw) <= hi:
        raise AdminError(422, "Invalid query.", errors={name: f"expected an integer from {lo} to {hi}"})
    return int(raw)


def _limit(request: Request, default: int, hi: int) -> int:
    value = _int_param(request, "limit", default, 1, hi)
    assert value is not None
    return value


def _wait(request: Request) -> bool:
    raw = request.query_params.get("wait", "false").lower()
    if raw not in _TRUE | _FALSE:
        raise AdminError(422, "Invalid query.", errors={"wait": "expected true or false"})
    return raw in _TRUE


def _path_int(request: Request, name: str, maximum: int) -> int:
    raw = str(request.path_params[name])
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > maximum:
        raise AdminError(404, f"No DLQ record at {name} {raw!r}.")
    return int(raw)


async def _finish(state: AdminState, result: WriteResult, wait: bool) -> Response:
    if not result.published:
        return json_response(result, 200)
    if not wait:
        return json_response(result, 202)
    assert result.version is not None
    try:
        result.wait_ms = await wait_applied(state, result.campaign_id, result.version)
    except AdminError as exc:
        exc.extra.update(partition=result.partition, offset=result.offset)
        raise
    result.applied = True
    return json_response(result, 200)


def create_campaign(ref: StateRef) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        state = state_of(ref)
        author = await require(state, request, "write")
        wait = _wait(request)
        obj = json_object(await read_body(request, state.settings.max_body_bytes))
        return await _finish(state, await writes.create(state, obj, author), wait)

    return endpoint


def update_campaign(ref: StateRef) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        state = state_of(ref)
        author = await require(state, request, "write")
        wait = _wait(request)
        obj = json_object(await read_body(request, state.settings.max_body_bytes))
        result = await writes.update(state, request.path_params["campaign_id"], obj, author)
        return await _finish(state, result, wait)

    return endpoint


def stop_campaign(ref: StateRef) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        state = state_of(ref)
        author = await require(state, request, "write")
        wait = _wait(request)
        await read_body(request, state.settings.max_body_bytes)  # any body is ignored, but bounded
        result = await writes.stop(state, request.path_params["campaign_id"], author)
        return await _finish(state, result, wait)

    return endpoint


def list_campaigns(ref: StateRef) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        state = state_of(ref)
        await require(state, request, "read")
        params = request.query_params
        status = params.get("status")
        if status is not None and status not in STATUSES:
            raise AdminError(422, "Invalid query.", errors={"status": "expected Active or Inactive"})
        for name in ("category", "q", "cursor"):
            if len(params.get(name, "")) > 1000 or "\x00" in params.get(name, ""):
                raise AdminError(422, "Invalid query.", errors={name: "longer than 1000 chars or has NUL"})
        page = await store.list_campaigns(
            state.pool, status=status, category=params.get("category"), q=params.get("q") or None,
            cursor=params.get("cursor") or None, limit=_limit(request, 50, 500),
        )  # fmt: skip
        return json_response(page)

    return endpoint


def show_campaign(ref: StateRef) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        state = state_of(ref)
        await require(state, request, "read")
        return json_response(await reads.campaign_detail(state, request.path_params["campaign_id"]))

    return endpoint


def list_dlq(ref: StateRef) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        state = state_of(ref)
        await require(state, request, "read")
        return json_response(await dlq.list_dlq(state, _limit(request, 100, 1000)))

    return endpoint


def replay_dlq(ref: StateRef) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        state = state_of(ref)
        author = await require(state, request, "write")
        partition = _path_int(request, "partition", MAX_PARTITION)
        offset = _path_int(request, "offset", MAX_OFFSET)
        result = await dlq.replay(state, partition, offset, author)
        return json_response(result, 200 if result.replayed_before else 202)

    return endpoint


def list_audit(ref: StateRef) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        state = state_of(ref)
        await require(state, request, "admin")
        campaign_id = request.query_params.get("campaign_id") or None
        if campaign_id is not None and (len(campaign_id) > 64 or "\x00" in campaign_id):
            raise AdminError(422, "Invalid query.", errors={"campaign_id": "not a campaign id"})
        page = await store.list_audit(
            state.pool, campaign_id=campaign_id, cursor=_int_param(request, "cursor", None, 1, 2**62),
            limit=_limit(request, 100, 1000),
        )  # fmt: skip
        return json_response(page)

    return endpoint
