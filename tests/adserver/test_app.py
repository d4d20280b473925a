"""The app without its lifespan: importing and building it connects to nothing (these tests are unmarked,
so any connection to the stack would fail them); until the lifespan runs, it is alive but not ready."""

from __future__ import annotations

import httpx
import orjson

import adserver.app
from adserver.app import create_app


async def test_built_app_answers_before_start() -> None:
    assert adserver.app.app is not None  # the module-level app for uvicorn, built at import
    app = create_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 503
        serve = await client.get("/ad/user/u1/serve", params={"device_type": "iPhone"})
        assert serve.status_code == 503 and serve.headers["retry-after"] == "1"
        assert "adserver_http_requests_total" in (await client.get("/metrics")).text
        document = orjson.loads((await client.get("/openapi.json")).content)
        assert "/ad/user/{user_id}/serve" in document["paths"]
        missing = await client.get("/nope")
        assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
