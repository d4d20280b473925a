"""The HTTP benchmarks' reference: a minimal Starlette app answering the serve URL with fixed JSON, and the
feedback URL (a POST whose body it reads) with the ad server's fixed 200 body.

Same route templates as the ad server (so routing costs the same), no middleware, no state.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

BODY = {
    "text": "Acme Lightweight Yoga Mat 7",
    "request_id": "dev1.fixed-request-id-of-a-typical-length-for-the-reference-app.0123456789abcdef",
    "campaign_id": "8cf1b846-8f97-11f0-b7f6-0e087721c0e9",
    "category": "Sports & Fitness",
}


#: The ad server's feedback 200 body (``adserver.feedback.SUCCESS``).
FEEDBACK_BODY = {"status": "Success"}


async def serve(request: Request) -> Response:
    return JSONResponse(BODY)


async def feedback(request: Request) -> Response:
    await request.body()
    return JSONResponse(FEEDBACK_BODY)


app = Starlette(
    routes=[
        Route("/ad/user/{user_id}/serve", serve, methods=["GET"]),
        Route("/ad/{request_id}/feedback", feedback, methods=["POST"]),
    ]
)
