"""The admin API client: the key as a bearer header (never in reprs, never across a redirect), error
answers in one line with each field's reason, and no answer as ``AdminUnreachableError``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from adplatform.admin_client import AdminApiError, AdminClient, AdminUnreachableError

SECRET = "adp_kid.very-secret-value"


class _Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/v1/campaigns?limit=1")
            self.end_headers()
            return
        if self.path.startswith("/v1/campaigns/"):
            payload = {"detail": "Invalid campaign.", "errors": {"cpc": "not a decimal", "text": "missing"}}
            self._answer(422, json.dumps(payload).encode())
            return
        self._answer(200, b'{"items": [], "next_cursor": null}')

    def _answer(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.seen.clear()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_key_is_sent_as_a_bearer_and_kept_out_of_reprs(server: str) -> None:
    client = AdminClient(server, SECRET)
    assert SECRET not in repr(client)
    page = client.list_campaigns(status="Active", category=None, q="a b", cursor=None, limit=5)
    assert page == {"items": [], "next_cursor": None}
    assert _Handler.seen == [("/v1/campaigns?status=Active&q=a+b&limit=5", f"Bearer {SECRET}")]


def test_a_redirect_does_not_carry_the_key(server: str) -> None:
    AdminClient(server, SECRET).call("GET", "/redirect")
    assert _Handler.seen == [("/redirect", f"Bearer {SECRET}"), ("/v1/campaigns?limit=1", None)]


def test_an_error_answer_is_one_line_with_every_field(server: str) -> None:
    with pytest.raises(AdminApiError) as caught:
        AdminClient(server, SECRET).show_campaign("a/b")
    assert _Handler.seen[0][0] == "/v1/campaigns/a%2Fb"
    assert caught.value.status == 422
    assert caught.value.one_line() == "422: Invalid campaign. cpc: not a decimal; text: missing"
    assert SECRET not in str(caught.value)


def test_a_timed_out_wait_names_where_the_instruction_went() -> None:
    error = AdminApiError(504, {"detail": "Not applied in time.", "partition": 1, "offset": 7})
    assert error.one_line() == "504: Not applied in time. (published at partition 1 offset 7)"


def test_no_answer_is_unreachable() -> None:
    with pytest.raises(AdminUnreachableError) as caught:
        AdminClient("http://127.0.0.1:1", SECRET, timeout_s=5).list_dlq(limit=1)
    assert caught.value.address == "127.0.0.1:1" and caught.value.reason == "connection refused"
