"""The ``/v1`` endpoints of explain and diagnosis (read role): parse the query, call ``admin.explain`` or
``admin.diagnosis``, encode their Structs."""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from admin.api import Endpoint, json_response, state_of
from admin.auth import require
from admin.diagnosis import diagnose
from admin.error import AdminError
from admin.explain import explain_query
from admin.insight import WINDOW_S, Insight
from admin.state import AdminState, StateRef

#: Diagnosis window when the query names none, seconds.
DEFAULT_WINDOW_S: Final = 15 * 60


def _insight(state: AdminState) -> Insight:
    if state.insight is None:
        raise AdminError(503, "Explain and diagnosis are not running in this admin service.")
    return state.insight


def explain(ref: StateRef) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        state = state_of(ref)
        await require(state, request, "read")
        user_id = request.query_params.get("user_id")
        result = await explain_query(state, _insight(state), user_id, request.scope["query_string"])
        return json_response(result)

    return endpoint


def diagnosis(ref: StateRef) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        state = state_of(ref)
        await require(state, request, "read")
        raw = request.query_params.get("window_s")
        window_s = DEFAULT_WINDOW_S
        if raw is not None:
            if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= WINDOW_S:
                raise AdminError(422, "Invalid query.", errors={"window_s": f"expected 1 to {WINDOW_S}"})
            window_s = int(raw)
        campaign_id = request.path_params["campaign_id"]
        return json_response(await diagnose(state, _insight(state), campaign_id, window_s))

    return endpoint
