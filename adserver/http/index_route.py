"""``GET /index/campaigns/{campaign_id}``: which version of a campaign this worker's index holds.

Read-only and tiny, for the admin service's read-your-write wait: several workers share one port, so the
answer names the worker (its pid) and a client polling over fresh connections hears from each of them.
``version`` is null when this worker has never seen the campaign; ``status`` is its status there.
"""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adserver.http.health import Endpoint
from adserver.state import StateRef

ROUTE = "/index/campaigns/{campaign_id}"


def campaign_version(ref: StateRef) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        state = ref.state
        if state is None:
            return JSONResponse({"worker": os.getpid(), "version": None, "status": None}, status_code=503)
        campaign = state.index.get(request.path_params["campaign_id"])
        body = {
            "worker": os.getpid(),
            "version": None if campaign is None else campaign.version,
            "status": None if campaign is None else campaign.status,
        }
        return JSONResponse(body)

    return endpoint
