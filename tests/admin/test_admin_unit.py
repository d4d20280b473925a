"""The admin service without the stack: settings, keys and roles, the OpenAPI document, the /docs page
and its vendored assets (served without any network)."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
import pytest

from admin import openapi, schema
from admin.app import STATIC, create_app
from admin.keys import Principal, new_key
from admin.settings import AdminConfig, load_admin_config
from adplatform.config import ConfigError
from adplatform.instruction import COLUMNS, CampaignInstruction


def test_settings_defaults_and_errors() -> None:
    assert load_admin_config({}, dotenv=Path("/nonexistent/.env")) == AdminConfig()
    got = load_admin_config(
        {
            "ADP_ADSERVER_URLS": "http://a:1, http://b:2/",
            "ADP_ADSERVER_WORKERS": "4",
            "ADP_ADMIN_WAIT_TIMEOUT_S": "2.5",
        }
    )
    assert got.adserver_urls == ("http://a:1", "http://b:2") and got.adserver_workers == 4
    assert got.wait_timeout_s == 2.5
    for bad in (
        {"ADP_ADSERVER_URLS": "ftp://x"},
        {"ADP_ADSERVER_WORKERS": "0"},
        {"ADP_ADMIN_WAIT_TIMEOUT_S": "nan"},
    ):
        with pytest.raises(ConfigError, match="ADP_"):
            load_admin_config(bad)


def test_roles_are_ordered_and_keys_never_show() -> None:
    reader, writer, admin = Principal("r", "read"), Principal("w", "write"), Principal("a", "admin")
    assert reader.allows("read") and not reader.allows("write")
    assert writer.allows("write") and not writer.allows("admin")
    assert admin.allows("read") and admin.allows("admin")
    key_id, key = new_key()
    assert key.startswith(f"adp_{key_id}.") and len(key) == 4 + 12 + 1 + 43
    assert key not in repr(Principal("w", "write"))


def test_openapi_is_generated_from_the_request_structs() -> None:
    doc = msgspec.json.decode(openapi.ENCODED)
    assert doc["openapi"].startswith("3.1")
    create = doc["components"]["schemas"]["CampaignCreate"]
    assert set(create["properties"]) == set(CampaignInstruction.__struct_fields__) - {"action"}
    assert set(create["required"]) == set(COLUMNS) - {"action"}
    assert create["additionalProperties"] is False
    _, components = msgspec.json.schema_components(
        (*schema.REQUEST_BODIES, *schema.RESPONSE_BODIES), ref_template="#/components/schemas/{name}"
    )
    for name, component in components.items():  # other routes may add their own components
        assert doc["components"]["schemas"][name] == component
    body = doc["paths"]["/v1/campaigns"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/CampaignCreate"}


async def test_docs_page_and_assets_are_served_locally() -> None:
    app = create_app()  # never started: no lifespan, so no config is read and nothing connects
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        page = await client.get("/docs")
        assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
        assert "http" not in page.text.replace("http-equiv", "")  # no CDN
        for asset in ("/static/swagger-ui/swagger-ui-bundle.js", "/static/swagger-ui/swagger-ui.css",
                      "/static/docs.js"):  # fmt: skip
            assert (await client.get(asset)).status_code == 200
        assert (await client.get("/v1/openapi.json")).json()["info"]["title"] == "adplatform admin"
        assert (await client.get("/v1/campaigns")).status_code == 503  # not started
    assert (STATIC / "swagger-ui" / "LICENSE").is_file()
