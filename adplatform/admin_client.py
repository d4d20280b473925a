"""A client of the admin service's ``/v1`` API for the CLI and scripts: JSON in, JSON out, two errors.

Standard library only (``urllib.request``): the CLI is in the ad server's runtime set, and httpx is only in
the ``loadtest`` extra. The API key goes in ``Authorization: Bearer`` as an unredirected header (a redirect
never carries it elsewhere) and is kept out of reprs and messages.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

from adplatform.errors import connection_reason

#: Seconds to wait for an answer: above the service's own ``?wait=true`` timeout (10 s by default).
DEFAULT_TIMEOUT_S: Final = 60.0
#: A loopback admin service is reached directly, whatever ``http_proxy`` says.
_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})


class AdminClientError(Exception):
    """Base of this module's errors."""


class AdminUnreachableError(AdminClientError):
    """No HTTP answer from the admin service at ``address``: ``reason`` in a few words."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"the admin service is not reachable at {address} ({reason})")
        self.address = address
        self.reason = reason


class AdminApiError(AdminClientError):
    """The admin service answered with an error: its status, ``detail``, per-field ``errors`` (422) and
    any other fields of the body (``partition`` and ``offset`` of a write whose wait timed out)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.detail = str(body.get("detail") or f"HTTP {status}")
        raw_errors = body.get("errors")
        self.errors: dict[str, str] = (
            {str(k): str(v) for k, v in raw_errors.items()} if isinstance(raw_errors, dict) else {}
        )
        self.extra = {k: v for k, v in body.items() if k not in ("detail", "errors")}
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The answer in one readable line: status, detail, then each field's reason."""
        text = f"{self.status}: {self.detail}"
        if self.errors:
            text += " " + "; ".join(f"{name}: {reason}" for name, reason in self.errors.items())
        if "partition" in self.extra and "offset" in self.extra:
            text += f" (published at partition {self.extra['partition']} offset {self.extra['offset']})"
        return text


@dataclass(frozen=True)
class AdminClient:
    """Calls the admin service at ``base_url`` with ``api_key``; every method returns the decoded JSON
    answer, or raises ``AdminApiError`` (an error answer) or ``AdminUnreachableError`` (no answer)."""

    base_url: str
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def address(self) -> str:
        """host:port, for messages."""
        parts = urlsplit(self.base_url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return self.base_url
        return f"{parts.hostname}:{port}"

    def _opener(self) -> urllib.request.OpenerDirector:
        if urlsplit(self.base_url).hostname in _LOOPBACK:
            return urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return urllib.request.build_opener()

    def call(
        self, method: str, path: str, *, query: dict[str, str | None] | None = None, body: object = None
    ) -> Any:
        """``method path?query`` with a JSON ``body``; the decoded JSON answer."""
        params = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.base_url + path + ("?" + urlencode(params) if params else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_unredirected_header("Authorization", f"Bearer {self.api_key}")
        try:
            with self._opener().open(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                raise AdminApiError(exc.code, self._error_body(exc.code, exc.read())) from None
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out, unknown host
            raise AdminUnreachableError(self.address, connection_reason(exc)) from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            detail = "the answer is not JSON: is ADP_ADMIN_URL the admin service?"
            raise AdminApiError(502, {"detail": detail}) from None

    @staticmethod
    def _error_body(status: int, raw: bytes) -> dict[str, Any]:
        try:
            decoded = json.loads(raw)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            return decoded
        return {"detail": raw.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}"}

    # The endpoints, one method each.

    def list_campaigns(
        self, *, status: str | None, category: str | None, q: str | None, cursor: str | None, limit: int
    ) -> dict[str, Any]:
        query = {"status": status, "category": category, "q": q, "cursor": cursor, "limit": str(limit)}
        answer: dict[str, Any] = self.call("GET", "/v1/campaigns", query=query)
        return answer

    def show_campaign(self, campaign_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("GET", f"/v1/campaigns/{_segment(campaign_id)}")
        return answer

    def create_campaign(self, fields: dict[str, Any], *, wait: bool) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("POST", "/v1/campaigns", query=_wait(wait), body=fields)
        return answer

    def update_campaign(self, campaign_id: str, fields: dict[str, Any], *, wait: bool) -> dict[str, Any]:
        path = f"/v1/campaigns/{_segment(campaign_id)}"
        answer: dict[str, Any] = self.call("PATCH", path, query=_wait(wait), body=fields)
        return answer

    def stop_campaign(self, campaign_id: str, *, wait: bool) -> dict[str, Any]:
        path = f"/v1/campaigns/{_segment(campaign_id)}/stop"
        answer: dict[str, Any] = self.call("POST", path, query=_wait(wait))
        return answer

    def list_dlq(self, *, limit: int) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("GET", "/v1/dlq", query={"limit": str(limit)})
        return answer

    def replay_dlq(self, partition: int, offset: int) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("POST", f"/v1/dlq/{partition}/{offset}/replay")
        return answer

    def explain(self, params: dict[str, str | None]) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("GET", "/v1/explain", query=params)
        return answer


def _segment(value: str) -> str:
    """A path segment: an id with ``/`` or ``?`` in it stays one segment (and gets its 404)."""
    return quote(value, safe="")


def _wait(wait: bool) -> dict[str, str | None]:
    return {"wait": "true" if wait else "false"}
