"""The OpenAPI 3.1 document of the ad server, written by hand (no pydantic) and encoded once.

It also describes ``POST /ad/{request_id}/feedback``, which its own module mounts: one document for
the whole public surface, so clients find both routes in one place.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from adserver.http.middleware import MAX_BODY_BYTES
from adserver.params import ANONYMOUS_USER_ID, MAX_AGE, MAX_PARAM_CHARS, MAX_USER_ID_CHARS
from index.campaign import DEVICE_TYPES, GENDERS, INCOME_BUCKETS


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ref("Error"))}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_PARAM_CHARS}
_UNKNOWN = " Absent means unknown: only campaigns targeting `All` match. Present but empty is a 422."

SERVE: Final = {
    "get": {
        "operationId": "serveAd",
        "summary": "Pick an ad for a user: targeting index, second-price auction, sealed request_id.",
        "description": (
            "Query parameters win over the user's stored profile (loaded from PostgreSQL in the background; "
            "never read per request). "
            f"`{ANONYMOUS_USER_ID}` is the privacy user: no profile is looked up and "
            "age, gender and income bucket are ignored, so only campaigns targeting `All` for them match. "
            "A city implies its state and country; a request without a country gets the default country. "
            "Unknown query parameters are ignored."
        ),
        "parameters": [
            {
                "name": "user_id",
                "in": "path",
                "required": True,
                "schema": {
                    "type": "string",
                    "maxLength": MAX_USER_ID_CHARS,
                    "pattern": "^[A-Za-z0-9_.:@-]+$",
                },
            },
            _query(
                "device_type",
                "Device of the request." + _UNKNOWN,
                {"type": "string", "enum": list(DEVICE_TYPES)},
            ),
            _query("city", "City (case-insensitive for known cities)." + _UNKNOWN, _TEXT),
            _query("state", "State." + _UNKNOWN, _TEXT),
            _query("country", "Country; absent means the configured default country.", _TEXT),
            _query("age", "Age in years." + _UNKNOWN, {"type": "integer", "minimum": 0, "maximum": MAX_AGE}),
            _query("gender", "Gender." + _UNKNOWN, {"type": "string", "enum": list(GENDERS)}),
            _query(
                "income_bucket", "Income bucket." + _UNKNOWN, {"type": "string", "enum": list(INCOME_BUCKETS)}
            ),
        ],
        "responses": {
            "200": {"description": "The winning ad.", "content": _json(_ref("Ad"))},
            "404": _error("No eligible ads found."),
            "422": _error("A malformed parameter; `detail` names it and says why."),
            "503": _error("The worker's index is still loading (see Retry-After)."),
        },
    }
}

FEEDBACK: Final = {
    "post": {
        "operationId": "postFeedback",
        "summary": "Record a user's view, click or acquisition of a served ad; charges the campaign once.",
        "parameters": [
            {
                "name": "request_id",
                "in": "path",
                "required": True,
                "description": "The request_id of a served ad.",
                "schema": {"type": "string", "maxLength": 512},
            },
        ],
        "requestBody": {"required": True, "content": _json(_ref("Feedback"))},
        "responses": {
            "200": {"description": "Charged (or free) and published.", "content": _json(_ref("Success"))},
            "404": _error("Unknown, forged or expired request_id."),
            "413": _error(f"Body larger than {MAX_BODY_BYTES} bytes."),
            "422": _error("Malformed body."),
            "503": _error("Budget store or event log unavailable: nothing was charged."),
        },
    }
}


INDEX_CAMPAIGN: Final = {
    "get": {
        "operationId": "indexCampaignVersion",
        "summary": "Which version of a campaign the answering worker's index holds (read-your-write polls).",
        "description": (
            "For the admin service's `?wait=true`: several workers share the port, so the answer names the "
            "worker (its pid); polling over fresh connections hears from each. `version` and `status` are "
            "null when this worker has never seen the campaign."
        ),
        "parameters": [
            {
                "name": "campaign_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
            },
        ],
        "responses": {
            "200": {"description": "This worker's version of it.", "content": _json(_ref("IndexVersion"))},
            "404": _error("No such route (an empty id, or one holding a slash)."),
            "503": {"description": "The worker is starting.", "content": _json(_ref("IndexVersion"))},
        },
    }
}


def _plain(summary: str, ok: str, media: str = "application/json") -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": {"description": ok, "content": {media: {}}}}}}


DOCUMENT: Final = {
    "openapi": "3.1.0",
    "info": {"title": "adplatform ad server", "version": "0.1.0"},
    "paths": {
        "/ad/user/{user_id}/serve": SERVE,
        "/ad/{request_id}/feedback": FEEDBACK,
        "/healthz": _plain("Liveness: 200 while the process answers.", "Alive."),
        "/readyz": {
            "get": {
                "summary": "Readiness of the answering worker: 200 once its index is bootstrapped.",
                "responses": {
                    "200": {"description": "Ready.", "content": _json(_ref("Readiness"))},
                    "503": {"description": "Still bootstrapping.", "content": _json(_ref("Readiness"))},
                },
            }
        },
        "/index/campaigns/{campaign_id}": INDEX_CAMPAIGN,
        "/metrics": _plain("Prometheus metrics of the answering worker.", "Text format 0.0.4.", "text/plain"),
        "/openapi.json": _plain("This document.", "OpenAPI 3.1."),
    },
    "components": {
        "schemas": {
            "Ad": {
                "type": "object",
                "required": ["text", "request_id", "campaign_id", "category"],
                "properties": {
                    "text": {"type": "string"},
                    "request_id": {
                        "type": "string",
                        "description": (
                            "Opaque sealed token (authenticated encryption); send it back with feedback."
                        ),
                    },
                    "campaign_id": {"type": "string"},
                    "category": {"type": "string"},
                },
            },
            "Feedback": {
                "type": "object",
                "required": ["view", "click", "acquisition"],
                "properties": {
                    k: {"type": "integer", "enum": [0, 1]} for k in ("view", "click", "acquisition")
                },
                "additionalProperties": False,
            },
            "Success": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"const": "Success"}},
            },
            "Readiness": {
                "type": "object",
                "required": ["status", "worker"],
                "properties": {
                    "status": {"enum": ["starting", "bootstrapping", "ready"]},
                    "worker": {"type": "integer", "description": "pid of the worker that answered"},
                    "index_ready": {"type": "boolean"},
                    "index_size": {"type": "integer"},
                    "profiles": {"type": "integer"},
                    "profiles_loaded": {"type": "boolean"},
                },
            },
            "IndexVersion": {
                "type": "object",
                "required": ["worker", "version", "status"],
                "properties": {
                    "worker": {"type": "integer", "description": "pid of the worker that answered"},
                    "version": {"type": ["integer", "null"]},
                    "status": {"enum": ["Active", "Inactive", None]},
                },
            },
            "Error": {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}},
        }
    },
}


def _with_request_limits(document: dict[str, Any]) -> dict[str, Any]:
    """Every route may answer 414 and 431 (``RequestLimitMiddleware`` runs before any of them)."""
    for operations in document["paths"].values():
        for operation in operations.values():
            operation["responses"].setdefault("414", _error("Request target too long."))
            operation["responses"].setdefault("431", _error("Too many or too large request headers."))
    return document


_with_request_limits(DOCUMENT)
ENCODED: Final = orjson.dumps(DOCUMENT)
