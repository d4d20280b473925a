"""The HTTP surface on the real stack: readiness, malformed requests, metrics, the OpenAPI document."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config
from adplatform.kafka import ensure_topics, wait_for_topics
from tests.adserver.serving import campaign_row, eventually, ingest, serve, serving

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

SERVE = "/ad/user/{}/serve"
#: (path with query, expected status): every malformed request is a 4xx with a JSON reason, never a 500.
MALFORMED: list[tuple[str, int]] = [
    (SERVE.format("u1") + "?device_type=Phone", 422),
    (SERVE.format("u1") + "?device_type=", 422),
    (SERVE.format("u1") + "?city=", 422),
    (SERVE.format("u1") + "?state=", 422),
    (SERVE.format("u1") + "?age=abc", 422),
    (SERVE.format("u1") + "?age=-3", 422),
    (SERVE.format("u1") + "?age=1e3", 422),
    (SERVE.format("u1") + "?age=999", 422),
    (SERVE.format("u1") + "?age=%EF%BC%92", 422),  # a full-width digit
    (SERVE.format("u1") + "?gender=X", 422),
    (SERVE.format("u1") + "?income_bucket=Rich", 422),
    (SERVE.format("u1") + "?city=" + "x" * 101, 422),
    (SERVE.format("u1") + "?city=%FF%FE", 422),  # not UTF-8
    (SERVE.format("u1") + "?" + "&".join(f"junk{i}=1" for i in range(400)), 422),
    (SERVE.format("u" * 65), 422),
    (SERVE.format("bad%20id"), 422),
    (SERVE.format("%C3%A9"), 422),
    (SERVE.format("u1") + "/extra", 404),
    ("/ad/user//serve", 404),
    ("/nowhere", 404),
]


@pytest.fixture
async def stack(topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis) -> Config:
    return topics


async def test_malformed_requests_are_4xx_with_a_reason(stack: Config) -> None:
    async with serving(stack) as (_, client):
        for path, status in MALFORMED:
            response = await client.get(path)
            assert response.status_code == status, (path, response.text)
            detail = response.json()["detail"]
            assert isinstance(detail, str) and detail, path


async def test_absent_parameters_mean_unknown(stack: Config, tmp_path: Path) -> None:
    await ingest(stack, [campaign_row("iphone-only", device="iPhone")], tmp_path)
    async with serving(stack) as (_, client):
        assert (await serve(client)).status_code == 404  # no device: only All campaigns could match
        assert (await serve(client, device_type="iPhone")).status_code == 200
        assert (await serve(client, device_type="iPhone", unknown="x")).status_code == 200  # ignored


async def test_router_path_answers_like_the_fast_path(stack: Config, tmp_path: Path) -> None:
    """A GET carrying a body header and a HEAD take the router's route to the same endpoint."""
    await ingest(stack, [campaign_row("only")], tmp_path)
    async with serving(stack) as (app, client):
        fast = await serve(client, device_type="iPhone")
        routed = await client.get(
            SERVE.format("u1"), params={"device_type": "iPhone"}, headers={"content-length": "0"}
        )
        head = await client.head(SERVE.format("u1"), params={"device_type": "iPhone"})
        bad = await client.get(SERVE.format("u1"), params={"age": "x"}, headers={"content-length": "0"})
        assert fast.status_code == routed.status_code == head.status_code == 200
        assert fast.json()["campaign_id"] == routed.json()["campaign_id"] == "only"
        assert fast.json()["request_id"] != routed.json()["request_id"]  # a fresh nonce per request
        assert bad.status_code == 422
        counted = app.state.ref.metrics.requests
        assert (
            counted[("/ad/user/{user_id}/serve", 200)] == 3
            and counted[("/ad/user/{user_id}/serve", 422)] == 1
        )


async def test_wrong_method_and_large_body(stack: Config) -> None:
    async with serving(stack) as (_, client):
        assert (await client.post(SERVE.format("u1"))).status_code == 405
        big = await client.post("/ad/r1/feedback", content=b"{" + b" " * 5000 + b"}")
        assert big.status_code == 413 and "4096" in big.json()["detail"]


async def test_readyz_is_503_until_the_index_is_bootstrapped(
    config: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    # No topics yet: the worker is alive but cannot bootstrap.
    async with serving(config, wait_ready=False) as (_, client):
        assert (await client.get("/healthz")).status_code == 200
        response = await client.get("/readyz")
        assert response.status_code == 503 and response.json()["status"] == "bootstrapping"
        assert response.json()["worker"] == os.getpid()  # several workers share a port: which one answered
        not_ready = await serve(client, device_type="iPhone")
        assert not_ready.status_code == 503 and not_ready.headers["retry-after"] == "1"
        await ensure_topics(config)
        await wait_for_topics(config, config.topics.all())

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, timeout_s=20, poll_s=0.1)
        assert (await serve(client, device_type="iPhone")).status_code == 404


async def test_metrics_expose_the_series(stack: Config, tmp_path: Path) -> None:
    await ingest(stack, [campaign_row("a", device="iPhone")], tmp_path)
    async with serving(stack) as (_, client):
        await serve(client, device_type="iPhone")
        await serve(client, device_type="Macbook")
        await serve(client, device_type="Phone")
        text = (await client.get("/metrics")).text
    route = 'route="/ad/user/{user_id}/serve"'
    for line in (
        f'adserver_http_requests_total{{{route},status="200"}} 1.0',
        f'adserver_http_requests_total{{{route},status="404"}} 1.0',
        f'adserver_http_requests_total{{{route},status="422"}} 1.0',
        f"adserver_http_request_duration_seconds_count{{{route}}} 3.0",
        "adserver_ads_served_total 1.0",
        "adserver_ads_unfilled_total 1.0",
        "adserver_fill_ratio 0.5",
        "adserver_index_size 1.0",
        "adserver_index_ready 1.0",
        "adserver_index_lag_records 0.0",
        'adserver_serve_requests_total{outcome="served"} 1.0',
        'adserver_serve_requests_total{outcome="no_fill"} 1.0',
        'adserver_serve_requests_total{outcome="client_error"} 1.0',
        'adserver_no_fill_total{reason="no_eligible_ad"} 1.0',
        "adserver_auction_bidders_count 1.0",
    ):
        assert line in text.splitlines(), line
    assert "# TYPE adserver_http_request_duration_seconds histogram" in text
    assert "# TYPE adserver_change_propagation_seconds histogram" in text


async def test_openapi_document(stack: Config) -> None:
    async with serving(stack) as (_, client):
        response = await client.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    paths = {"/ad/user/{user_id}/serve", "/ad/{request_id}/feedback", "/healthz", "/readyz", "/metrics"}
    assert set(doc["paths"]) >= paths | {"/openapi.json"}
    serve_op = doc["paths"]["/ad/user/{user_id}/serve"]["get"]
    assert set(serve_op["responses"]) == {"200", "404", "414", "422", "431", "503"}
    names = {"user_id", "device_type", "city", "state", "country", "age", "gender", "income_bucket"}
    assert {p["name"] for p in serve_op["parameters"]} == names
    feedback = doc["paths"]["/ad/{request_id}/feedback"]["post"]
    assert set(feedback["responses"]) >= {"200", "404", "413", "422", "503"}
    assert doc["components"]["schemas"]["Feedback"]["required"] == ["view", "click", "acquisition"]
